// Package vsockdial connects host programs to a port inside a guest over
// either vsock backend of vmm/virtio/vsock: AF_VSOCK to the guest's CID
// (vhost-vsock), or the unix-socket "CONNECT <port>\n" / "OK <host_port>\n"
// handshake (the userspace backend). Dial retries until the guest
// listens or the context ends, which is what a runtime needs while the
// guest agent boots. It holds no state.
package vsockdial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"

	vdev "github.com/stratovirt-go/stratovirt/vmm/virtio/vsock"
)

// Target names a guest's vsock: UDSPath for the unix backend, otherwise
// CID for AF_VSOCK.
type Target struct {
	CID     uint32
	UDSPath string
}

// TargetOf returns the target for a device's Info (vmm.VM.Vsock).
func TargetOf(info vdev.Info) Target {
	if info.Backend == vdev.BackendUnix {
		return Target{CID: info.GuestCID, UDSPath: info.UDSPath}
	}
	return Target{CID: info.GuestCID}
}

func (t Target) String() string {
	if t.UDSPath != "" {
		return "unix:" + t.UDSPath
	}
	return "vsock:" + strconv.FormatUint(uint64(t.CID), 10)
}

// handshakeTimeout bounds one CONNECT handshake when ctx has no earlier
// deadline (the device gives the guest 2 s to answer).
const handshakeTimeout = 5 * time.Second

// Dial connects to port in the guest, retrying (10 ms, growing to 200 ms
// between tries) until it succeeds or ctx ends; then it returns the last
// connection error. The returned conn is a *net.UnixConn or a
// *vsock.Conn; both have CloseWrite.
func Dial(ctx context.Context, t Target, port uint32) (net.Conn, error) {
	wait := 10 * time.Millisecond
	for {
		c, err := DialOnce(ctx, t, port)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s port %d: %w (last error: %v)", t, port, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 200*time.Millisecond)
	}
}

// DialOnce makes one connection attempt.
func DialOnce(ctx context.Context, t Target, port uint32) (net.Conn, error) {
	if t.UDSPath != "" {
		return dialUnix(ctx, t.UDSPath, port)
	}
	return dialVsock(ctx, t.CID, port)
}

func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := vsock.Dial(cid, port, nil)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		ch <- result{c, nil}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func dialUnix(ctx context.Context, path string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(handshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock handshake: %w", err)
	}
	// Read the reply one byte at a time so that no guest data after the
	// newline is consumed here.
	var line []byte
	var b [1]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			c.Close()
			if errors.Is(err, net.ErrClosed) || isEOF(err) {
				return nil, fmt.Errorf("vsock handshake: guest port %d refused the connection", port)
			}
			return nil, fmt.Errorf("vsock handshake: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		if line = append(line, b[0]); len(line) > 32 {
			c.Close()
			return nil, fmt.Errorf("vsock handshake: reply too long")
		}
	}
	if !strings.HasPrefix(string(line), "OK ") {
		c.Close()
		return nil, fmt.Errorf("vsock handshake: unexpected reply %q", line)
	}
	stop()
	c.SetDeadline(time.Time{})
	return c, nil
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}
