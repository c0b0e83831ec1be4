package stdio

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
)

// Lookup finds the IO of a process, or fails with a reason for the host.
type Lookup func(containerID, execID string) (*IO, error)

// ErrNotYet may be returned (wrapped) by a Lookup for a process that does
// not exist yet: the stream server then retries for a while, so the host
// may dial streams before the RPC that creates the process.
var ErrNotYet = errors.New("no such process yet")

// Server accepts stream connections on a listener (vsock StreamPort in the
// guest, a unix socket on a host).
type Server struct {
	Lookup Lookup
	// Logs serves the log stream; nil refuses it.
	Logs *LogHub
	// AttachWait bounds how long a stream for a not-yet-created process
	// waits (default 30 s).
	AttachWait time.Duration
	// HandshakeTimeout bounds reading the header (default 10 s).
	HandshakeTimeout time.Duration
}

// Serve accepts connections until l is closed.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go s.handle(ctx, conn)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (s *Server) handle(ctx context.Context, conn net.Conn) {
	conn.SetReadDeadline(time.Now().Add(orDefault(s.HandshakeTimeout, 10*time.Second)))
	h, err := stream.ReadHeader(conn)
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		log.L.Warnf("stream: %v", err)
		stream.WriteReply(conn, err)
		conn.Close()
		return
	}
	if err := s.attach(ctx, h, conn); err != nil {
		log.L.Debugf("stream %s of %s/%s refused: %v", h.Kind, h.ContainerID, h.ExecID, err)
		stream.WriteReply(conn, err)
		conn.Close()
	}
}

func (s *Server) attach(ctx context.Context, h stream.Header, conn net.Conn) error {
	if h.Kind == stream.Log {
		if s.Logs == nil {
			return errors.New("no log stream")
		}
		if err := stream.WriteReply(conn, nil); err != nil {
			return err
		}
		s.Logs.Follow(conn)
		return nil
	}
	give := time.Now().Add(orDefault(s.AttachWait, 30*time.Second))
	for {
		// Wait for a process (or its terminal) that does not exist yet;
		// a failed Attach sends nothing, so it can be tried again.
		pio, err := s.Lookup(h.ContainerID, h.ExecID)
		if err == nil {
			err = pio.Attach(h.Kind, conn)
		}
		if errors.Is(err, ErrNotYet) && time.Now().Before(give) {
			select {
			case <-time.After(20 * time.Millisecond):
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return err
	}
}
