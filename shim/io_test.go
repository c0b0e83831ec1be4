package shim

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/fifo"
)

// TestOutputEOFBeforeDelete is the ctr t exec hang: ctr waits for end of
// file on its stdout and stderr FIFOs before it deletes the exec, so the
// shim must close its FIFO writers when the agent's streams end, not on
// Delete (closeHost).
func TestOutputEOFBeforeDelete(t *testing.T) {
	for _, tc := range []struct {
		name     string
		terminal bool
		stdin    bool
	}{
		{"pipes", false, false},
		{"pipes+stdin", false, true},
		{"terminal", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dir := t.TempDir()
			paths := stdioPaths{stdout: filepath.Join(dir, "out"), terminal: tc.terminal}
			if !tc.terminal {
				paths.stderr = filepath.Join(dir, "err")
			}
			if tc.stdin {
				paths.stdin = filepath.Join(dir, "in")
			}
			// containerd's client side (cio): creates and opens the FIFOs.
			flags := syscall.O_RDONLY | syscall.O_CREAT | syscall.O_NONBLOCK
			outR, err := fifo.OpenFifo(ctx, paths.stdout, flags, 0o700)
			if err != nil {
				t.Fatal(err)
			}
			defer outR.Close()
			var errR, inW io.ReadWriteCloser
			if paths.stderr != "" {
				if errR, err = fifo.OpenFifo(ctx, paths.stderr, flags, 0o700); err != nil {
					t.Fatal(err)
				}
				defer errR.Close()
			}
			if tc.stdin {
				if inW, err = fifo.OpenFifo(ctx, paths.stdin, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700); err != nil {
					t.Fatal(err)
				}
				defer inW.Close()
			}
			pio, err := openHostIO(ctx, "c", "ns", paths)
			if err != nil {
				t.Fatal(err)
			}
			defer pio.closeHost()
			// The agent's ends of the three streams.
			var agentIn, agentOut, agentErr, in, out, errc net.Conn
			if tc.stdin {
				in, agentIn = net.Pipe()
				go io.Copy(io.Discard, agentIn)
			}
			out, agentOut = net.Pipe()
			if !tc.terminal {
				errc, agentErr = net.Pipe()
			}
			pio.attach(in, out, errc)

			read := func(r io.Reader) <-chan string {
				ch := make(chan string, 1)
				go func() { b, _ := io.ReadAll(r); ch <- string(b) }()
				return ch
			}
			gotOut := read(outR)
			var gotErr <-chan string
			if errR != nil {
				gotErr = read(errR)
			}
			agentOut.Write([]byte("exec-out\n"))
			agentOut.Close()
			if agentErr != nil {
				agentErr.Write([]byte("exec-err\n"))
				agentErr.Close()
			}
			// No Delete (closeHost) yet: the readers must see EOF anyway.
			for _, c := range []struct {
				ch   <-chan string
				want string
			}{{gotOut, "exec-out\n"}, {gotErr, "exec-err\n"}} {
				if c.ch == nil {
					continue
				}
				select {
				case got := <-c.ch:
					if got != c.want {
						t.Fatalf("output %q, want %q", got, c.want)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("no EOF on the FIFO after the agent's stream ended (ctr t exec would hang)")
				}
			}
			if !pio.wait(time.Second) {
				t.Fatal("copies not done")
			}
			pio.closeHost() // Delete afterwards: closing again is harmless
		})
	}
}

// TestStdinOpenOutlivesRPC is the lost exec stdin: the shim opens the
// stdin FIFO during Create/Exec, but the open only completes once the
// client opens its end, possibly after the RPC returned and ttrpc
// cancelled the RPC's context. The input must still reach the process.
func TestStdinOpenOutlivesRPC(t *testing.T) {
	dir := t.TempDir()
	paths := stdioPaths{stdin: filepath.Join(dir, "in")}
	if err := syscall.Mkfifo(paths.stdin, 0o600); err != nil {
		t.Fatal(err)
	}
	rpc, cancel := context.WithCancel(context.Background())
	pio, err := openHostIO(rpc, "c", "ns", paths)
	if err != nil {
		t.Fatal(err)
	}
	defer pio.closeHost()
	cancel() // the Exec RPC returned
	time.Sleep(50 * time.Millisecond)

	// The client (ctr) opens its end only now, writes and closes.
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	w, err := fifo.OpenFifo(cctx, paths.stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("in\n")); err != nil {
		t.Fatalf("client write: %v (the shim closed its end of the stdin FIFO)", err)
	}
	w.Close()

	in, agentIn := net.Pipe()
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(agentIn); got <- string(b) }()
	pio.attach(in, nil, nil)
	select {
	case s := <-got:
		if s != "in\n" {
			t.Fatalf("the process read %q, want %q", s, "in\n")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stdin stream not closed after the client's end of file")
	}
}
