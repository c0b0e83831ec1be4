package qmp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The socket layer uses golang.org/x/sys/unix with os.File's poller
// rather than package net: importing net links cgo's resolver into a
// cgo-enabled build, which would make the VMM a dynamically linked
// binary whose threads come from glibc (clone3, rseq, …) rather than
// from Go's runtime, and the seccomp allow-lists are written for the
// latter.

// listener is a non-blocking listening unix socket on the poller.
type listener struct {
	f  *os.File
	rc syscall.RawConn
}

func listenUnix(path string) (*listener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Owner only, before anyone can connect (connect needs listen).
	if err := os.Chmod(path, 0o600); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("chmod: %w", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &listener{f: f, rc: rc}, nil
}

// accept waits for a client; os.ErrClosed after close.
func (l *listener) accept() (*sockConn, error) {
	var nfd int
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	f := os.NewFile(uintptr(nfd), "qmp-client")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &sockConn{f: f, rc: rc}, nil
}

func (l *listener) close() error { return l.f.Close() }

// sockConn is one accepted client socket.
type sockConn struct {
	f  *os.File
	rc syscall.RawConn
}

// recvmsg reads data and ancillary data; io.EOF when the client hung up.
func (c *sockConn) recvmsg(buf, oob []byte) (n, oobn, flags int, err error) {
	var rerr error
	err = c.rc.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, 0, 0, err
	}
	if n == 0 && oobn == 0 {
		return 0, 0, 0, io.EOF
	}
	return n, oobn, flags, nil
}
