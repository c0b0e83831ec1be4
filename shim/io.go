package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/fifo"
	"github.com/containerd/log"
)

// stdioPaths are the three URIs containerd gives for a process.
type stdioPaths struct {
	stdin, stdout, stderr string
	terminal              bool
}

// processIO copies between containerd's side of a process's stdio (FIFOs,
// a logging binary or files) and the stream connections to the agent.
// Output copies end at the stream's EOF (the agent closes a stream once
// the process and every holder of the stream are gone); then the host
// writers close at once, so containerd's readers see end of file without
// waiting for Delete (ctr t exec waits for that EOF before it deletes the
// exec), and done is closed.
type processIO struct {
	paths stdioPaths

	stdinR  io.ReadCloser
	stdinC  net.Conn
	stdinMu sync.Mutex

	outW, errW io.WriteCloser
	outC, errC net.Conn
	logger     *exec.Cmd

	copies   sync.WaitGroup
	done     chan struct{}
	outClose sync.Once
}

// openHostIO opens containerd's ends: stdin FIFO for reading, stdout and
// stderr FIFOs (or a binary:// logger, or file:// files) for writing.
func openHostIO(ctx context.Context, id, ns string, p stdioPaths) (_ *processIO, err error) {
	pio := &processIO{paths: p, done: make(chan struct{})}
	defer func() {
		if err != nil {
			pio.closeHost()
		}
	}()
	if p.stdin != "" {
		// O_NONBLOCK: the open completes in the background once the
		// client opens its end. It must not be tied to ctx, the RPC's
		// context (ttrpc cancels it when Create or Exec returns): a
		// cancelled context closes a FIFO that is not open yet, and the
		// process then reads end of file instead of its input (the exec
		// stdin loss seen under load). closeHost closes it.
		f, err := fifo.OpenFifo(context.WithoutCancel(ctx), p.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open stdin %q: %w", p.stdin, err)
		}
		pio.stdinR = f
	}
	u, err := url.Parse(p.stdout)
	if p.stdout != "" && err == nil && u.Scheme != "" && u.Scheme != "fifo" {
		switch u.Scheme {
		case "binary":
			return pio, pio.startLogger(ctx, u, id, ns)
		case "file":
			return pio, pio.openFiles(u.Path, p.stderr)
		default:
			return nil, fmt.Errorf("stdout %q: unsupported scheme %q (fifo, binary, file)", p.stdout, u.Scheme)
		}
	}
	if p.stdout != "" {
		w, err := fifo.OpenFifo(ctx, p.stdout, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open stdout %q: %w", p.stdout, err)
		}
		pio.outW = w
	}
	if p.stderr != "" && !p.terminal {
		w, err := fifo.OpenFifo(ctx, p.stderr, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open stderr %q: %w", p.stderr, err)
		}
		pio.errW = w
	}
	return pio, nil
}

func (p *processIO) openFiles(stdout, stderrURI string) error {
	open := func(path string) (*os.File, error) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	}
	f, err := open(stdout)
	if err != nil {
		return fmt.Errorf("log file %q: %w", stdout, err)
	}
	p.outW = f
	errPath := stdout
	if u, err := url.Parse(stderrURI); err == nil && u.Scheme == "file" && u.Path != "" {
		errPath = u.Path
	}
	if errPath == stdout {
		p.errW = nopCloser{f}
		return nil
	}
	g, err := open(errPath)
	if err != nil {
		return fmt.Errorf("log file %q: %w", errPath, err)
	}
	p.errW = g
	return nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// startLogger runs a binary:// logging driver as containerd's runc shim
// does: fd 3 and 4 read stdout and stderr, fd 5 is closed by the driver
// when it is ready.
func (p *processIO) startLogger(ctx context.Context, u *url.URL, id, ns string) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return err
	}
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 && vs[0] != "" {
			args = append(args, vs[0])
		}
	}
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+ns)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	err = cmd.Start()
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		outW.Close()
		errW.Close()
		readyR.Close()
		return fmt.Errorf("start logging binary %q: %w", u.Path, err)
	}
	p.logger = cmd
	p.outW, p.errW = outW, errW
	// Wait for the driver to be ready (it closes fd 5 or writes a byte).
	ready := make(chan struct{})
	go func() { b := make([]byte, 1); readyR.Read(b); readyR.Close(); close(ready) }()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("logging binary %q: not ready after 10s", u.Path)
	}
	return nil
}

// attach starts the copies over the agent's stream connections (any may
// be nil when not requested).
func (p *processIO) attach(stdin, stdout, stderr net.Conn) {
	p.stdinMu.Lock()
	p.stdinC, p.outC, p.errC = stdin, stdout, stderr
	stdinR := p.stdinR
	p.stdinMu.Unlock()
	if stdin != nil && stdinR != nil {
		go func() {
			buf := make([]byte, 32<<10)
			io.CopyBuffer(stdin, stdinR, buf)
			p.closeStdin()
		}()
	}
	out := func(c net.Conn, w io.WriteCloser) {
		defer p.copies.Done()
		if c == nil {
			return
		}
		defer c.Close()
		if w == nil {
			w = nopCloser{io.Discard}
		}
		buf := make([]byte, 32<<10)
		if _, err := io.CopyBuffer(w, c, buf); err != nil && !errors.Is(err, net.ErrClosed) {
			log.L.WithError(err).Debug("stdio copy")
		}
	}
	p.copies.Add(2)
	go out(stdout, p.outW)
	go out(stderr, p.errW)
	go func() {
		p.copies.Wait()
		// Both copies are done (stdout and stderr may share one file).
		p.closeOutputs()
		close(p.done)
	}()
}

// closeOutputs closes the host writers of stdout and stderr, once.
func (p *processIO) closeOutputs() {
	p.outClose.Do(func() {
		for _, w := range []io.Closer{p.outW, p.errW} {
			if w != nil {
				w.Close()
			}
		}
	})
}

// closeStdin ends the process's input: the stream is closed once what was
// read from the FIFO has been written to it.
func (p *processIO) closeStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdinC != nil {
		if cw, ok := p.stdinC.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		p.stdinC.Close()
		p.stdinC = nil
	}
	if p.stdinR != nil {
		p.stdinR.Close()
		p.stdinR = nil
	}
}

// closeIO handles CloseIO(stdin): the client has closed its end of the
// FIFO; let the copy drain what is buffered, then close.
func (p *processIO) closeIO() {
	go func() {
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		for {
			p.stdinMu.Lock()
			gone := p.stdinC == nil
			p.stdinMu.Unlock()
			if gone {
				return
			}
			select {
			case <-t.C:
				p.closeStdin()
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
}

// wait waits until the output copies end or d passes.
func (p *processIO) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// closeHost closes every host-side file (after the process is gone).
func (p *processIO) closeHost() {
	p.closeStdin()
	for _, c := range []net.Conn{p.outC, p.errC} {
		if c != nil {
			c.Close()
		}
	}
	p.closeOutputs()
	if p.logger != nil {
		done := make(chan struct{})
		go func() { p.logger.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.logger.Process.Kill()
			<-done
		}
		p.logger = nil
	}
}
