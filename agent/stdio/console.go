package stdio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// ConsoleSocket is the unix socket runc's --console-socket connects to in
// order to hand over the pty master of a terminal process.
type ConsoleSocket struct {
	l    *net.UnixListener
	path string
}

// NewConsoleSocket listens on path.
func NewConsoleSocket(path string) (*ConsoleSocket, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &ConsoleSocket{l: l, path: path}, nil
}

// Path is the socket's path, for runc.
func (c *ConsoleSocket) Path() string { return c.path }

// Close removes the socket.
func (c *ConsoleSocket) Close() error {
	err := c.l.Close()
	os.Remove(c.path)
	return err
}

// Receive accepts runc's connection and returns the pty master it sends,
// non-blocking so that reads can be given deadlines.
func (c *ConsoleSocket) Receive(ctx context.Context) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	res := make(chan result, 1)
	go func() {
		f, err := c.receive()
		res <- result{f, err}
	}()
	select {
	case r := <-res:
		return r.f, r.err
	case <-ctx.Done():
		c.l.Close()
		r := <-res
		if r.f != nil {
			r.f.Close()
		}
		return nil, ctx.Err()
	}
}

func (c *ConsoleSocket) receive() (*os.File, error) {
	conn, err := c.l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("console socket accept: %w", err)
	}
	defer conn.Close()
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(name, oob)
	if err != nil {
		return nil, fmt.Errorf("console socket read: %w", err)
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, err
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	fd := fds[0]
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), string(name[:n])), nil
}

// parseRights extracts the file descriptors of SCM_RIGHTS messages; it
// fails unless there is at least one.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	var fds []int
	for i := range msgs {
		f, err := unix.ParseUnixRights(&msgs[i])
		if err == nil {
			fds = append(fds, f...)
		}
	}
	if len(fds) == 0 {
		return nil, errors.New("console socket: no file descriptor received")
	}
	return fds, nil
}
