// Package stdio owns the standard streams of the agent's container
// processes: the pipes or pty each process gets, the stream connections
// the host attaches (one per stream, see agent-proto/stream), the copying
// goroutines between them, and the rule that a process's exit is reported
// only after its output reached the host.
//
// An IO is shared by the container manager (which creates it and waits for
// its output) and the stream server (which attaches connections); its
// fields are guarded by IO.mu, which is never held across blocking I/O.
package stdio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
)

// Config says which streams the host attaches and whether the process has
// a terminal.
type Config struct {
	Stdin, Stdout, Stderr bool
	Terminal              bool
}

// IO is the stdio of one process.
type IO struct {
	cfg Config

	// Child ends handed to runc (nil: /dev/null); closed by CloseChild.
	childIn, childOut, childErr *os.File

	mu       sync.Mutex
	stdinW   *os.File // pipe to the process, or the pty master
	console  *os.File // pty master (terminal only)
	outR     [3]*os.File
	attached [3]bool
	conns    [3]net.Conn
	done     [3]chan struct{} // closed when an output copy ends
	attach   [3]chan struct{} // closed when a stream is attached
	stdinEOF bool
	closed   bool
}

// New creates the pipes of a process (for a terminal, the pty comes later
// through SetConsole).
func New(cfg Config) (*IO, error) {
	s := &IO{cfg: cfg}
	for i := range s.done {
		s.done[i] = make(chan struct{})
		s.attach[i] = make(chan struct{})
	}
	if cfg.Terminal {
		s.cfg.Stderr = false
		return s, nil
	}
	var err error
	if cfg.Stdin {
		var r *os.File
		if r, s.stdinW, err = os.Pipe(); err != nil {
			return nil, err
		}
		s.childIn = r
	}
	if cfg.Stdout {
		if s.outR[stream.Stdout], s.childOut, err = os.Pipe(); err != nil {
			s.Close()
			return nil, err
		}
	}
	if cfg.Stderr {
		if s.outR[stream.Stderr], s.childErr, err = os.Pipe(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Terminal reports whether the process has a pty.
func (s *IO) Terminal() bool { return s.cfg.Terminal }

// ChildFiles returns the ends the process gets (nil for /dev/null).
func (s *IO) ChildFiles() (stdin, stdout, stderr *os.File) {
	return s.childIn, s.childOut, s.childErr
}

// CloseChild closes the agent's copies of the process's ends once runc
// has handed them over, so that end of output is seen.
func (s *IO) CloseChild() {
	for _, f := range []*os.File{s.childIn, s.childOut, s.childErr} {
		if f != nil {
			f.Close()
		}
	}
	s.childIn, s.childOut, s.childErr = nil, nil, nil
}

// SetConsole installs the pty master of a terminal process: stdout reads
// it and stdin writes it.
func (s *IO) SetConsole(master *os.File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.console = master
	if s.cfg.Stdin {
		s.stdinW = master
	}
	if s.cfg.Stdout {
		s.outR[stream.Stdout] = master
	}
}

// Resize sets the terminal's window size.
func (s *IO) Resize(rows, cols uint16) error {
	s.mu.Lock()
	c := s.console
	s.mu.Unlock()
	if c == nil {
		return errors.New("process has no terminal")
	}
	ws := &unix.Winsize{Row: rows, Col: cols}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("set window size: %w", ierr)
	}
	return nil
}

// WindowSize returns the terminal's window size.
func (s *IO) WindowSize() (rows, cols uint16, err error) {
	s.mu.Lock()
	c := s.console
	s.mu.Unlock()
	if c == nil {
		return 0, 0, errors.New("process has no terminal")
	}
	ws, err := unix.IoctlGetWinsize(int(c.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, err
	}
	return ws.Row, ws.Col, nil
}

// Attach connects a stream connection (after the handshake was read),
// sends the accepting reply and starts copying. It fails, sending
// nothing, when the stream was not requested or is already attached.
func (s *IO) Attach(kind stream.Kind, conn net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("process is gone")
	}
	var want bool
	switch kind {
	case stream.Stdin:
		want = s.cfg.Stdin
	case stream.Stdout:
		want = s.cfg.Stdout
	case stream.Stderr:
		want = s.cfg.Stderr
	}
	if !want {
		return fmt.Errorf("%s was not requested for this process", kind)
	}
	if s.attached[kind] {
		return fmt.Errorf("%s is already attached", kind)
	}
	if s.cfg.Terminal && s.console == nil {
		// runc has not handed the pty over yet (an exec's streams are
		// opened while it starts): the caller may try again.
		return fmt.Errorf("%w: the terminal of this process is not set up yet", ErrNotYet)
	}
	if kind == stream.Stdin {
		if s.stdinEOF {
			return errors.New("stdin is closed")
		}
		if s.stdinW == nil {
			return errors.New("stdin is not ready")
		}
	} else if s.outR[kind] == nil {
		return fmt.Errorf("%s is not ready", kind)
	}
	// The accepting reply goes before any data.
	if err := stream.WriteReply(conn, nil); err != nil {
		return err
	}
	s.attached[kind] = true
	s.conns[kind] = conn
	close(s.attach[kind])
	if kind == stream.Stdin {
		go s.copyIn(conn, s.stdinW)
	} else {
		go s.copyOut(kind, conn, s.outR[kind])
	}
	return nil
}

func (s *IO) copyIn(conn net.Conn, w *os.File) {
	buf := make([]byte, 32<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	s.CloseStdin()
}

func (s *IO) copyOut(kind stream.Kind, conn net.Conn, r *os.File) {
	defer close(s.done[kind])
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				log.L.Debugf("stdio: %s write: %v", kind, werr)
				break
			}
		}
		if err != nil {
			// EOF on a pipe; EIO on a pty master once the last slave
			// closes; a deadline when WaitOutput gave up.
			break
		}
	}
	conn.Close()
}

// CloseStdin ends the process's input: the pipe's write end closes (for a
// terminal, an end-of-file character is written instead).
func (s *IO) CloseStdin() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stdinEOF {
		return
	}
	s.stdinEOF = true
	if c := s.conns[stream.Stdin]; c != nil {
		c.Close()
	}
	if s.stdinW == nil {
		return
	}
	if s.console != nil {
		s.console.Write([]byte{4}) // VEOF in canonical mode
		return
	}
	s.stdinW.Close()
}

// WaitOutput waits, after the process exited, until its stdout and stderr
// have reached the host: each requested stream must be attached (waiting
// as long as ctx allows) and then reach end of file. An output stream
// still open grace after the exit (held by a surviving child) is cut.
func (s *IO) WaitOutput(ctx context.Context, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for _, k := range []stream.Kind{stream.Stdout, stream.Stderr} {
		if (k == stream.Stdout && !s.cfg.Stdout) || (k == stream.Stderr && !s.cfg.Stderr) {
			continue
		}
		select {
		case <-s.attach[k]:
		case <-ctx.Done():
			return ctx.Err()
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-s.done[k]:
			t.Stop()
			continue
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		s.mu.Lock()
		r := s.outR[k]
		s.mu.Unlock()
		log.L.Debugf("stdio: %s still open %v after exit; cutting it", k, grace)
		r.SetReadDeadline(time.Now())
		select {
		case <-s.done[k]:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close releases everything; copies in flight end with errors.
func (s *IO) Close() {
	s.CloseChild()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, c := range s.conns {
		if c != nil {
			c.Close()
		}
	}
	for _, f := range []*os.File{s.stdinW, s.console, s.outR[stream.Stdout], s.outR[stream.Stderr]} {
		if f != nil {
			f.Close()
		}
	}
	s.stdinEOF = true
}
