package vsocktest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

// Guest peer ports (tests/vsock/vsockpeer).
const (
	EchoPort    = 1024
	ControlPort = 1030
	// HostPort is where the peer's "connect" command dials the host.
	HostPort = 2000
)

// Cmdline is the guest kernel command line. softlockup_panic: a guest
// CPU stuck in the kernel (seen once in CI's lab, a kworker during the
// large host->guest transfer) panics at once, printing the stuck task's
// stack, which the quiet log level would hide, instead of leaving the test
// to time out.
const Cmdline = baseCmdline + " softlockup_panic=1"

// StoppableCmdline is the command line for a guest whose VMM is stopped
// (SIGSTOP) for long stretches, as the benchmark does: without the
// lockup watchdog, which takes such a stop for a stuck CPU (and with
// softlockup_panic, panics).
const StoppableCmdline = baseCmdline + " nowatchdog"

const baseCmdline = "console=ttyS0 reboot=k panic=1 quiet loglevel=3"

// syncBuf collects a VMM's output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// VM is a running VMM process.
type VM struct {
	Cmd      *exec.Cmd
	out, err *syncBuf
	done     chan error
}

// StratoVirtArgs is the command line booting f's guest with mem and extra
// options.
func (f Files) StratoVirtArgs(mem string, extra ...string) []string {
	return f.StratoVirtArgsCmdline(mem, Cmdline, extra...)
}

// StratoVirtArgsCmdline is StratoVirtArgs with the guest command line
// cmdline.
func (f Files) StratoVirtArgsCmdline(mem, cmdline string, extra ...string) []string {
	args := append([]string{f.VMM, "-name", "vsock-test", "-kernel", f.Kernel, "-initrd", f.Initrd, "-m", mem, "-smp", "2",
		"-serial", "stdio"}, extra...)
	return append(args, "-append", cmdline)
}

// Start runs args (a VMM command line) and waits for the guest peer to
// listen; the VMM is killed when the test ends.
func Start(t testing.TB, args []string) *VM {
	t.Helper()
	v := &VM{Cmd: exec.Command(args[0], args[1:]...), out: &syncBuf{}, err: &syncBuf{}, done: make(chan error, 1)}
	v.Cmd.Stdout, v.Cmd.Stderr = v.out, v.err
	if err := v.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.done <- v.Cmd.Wait() }()
	t.Cleanup(func() {
		v.Cmd.Process.Kill()
		<-v.done
		if t.Failed() {
			t.Logf("%s stdout:\n%s\nstderr:\n%s", args[0], v.out.String(), v.err.String())
		}
	})
	deadline := time.After(180 * time.Second)
	for !strings.Contains(v.out.String(), "PEER READY") {
		select {
		case err := <-v.done:
			v.done <- err
			t.Fatalf("VMM exited before the guest peer was ready: %v\n%s\n%s", err, v.out.String(), v.err.String())
		case <-deadline:
			t.Fatal("guest peer not ready after 180s")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return v
}

// Stop kills the VMM and waits for it.
func (v *VM) Stop() {
	v.Cmd.Process.Kill()
	err := <-v.done
	v.done <- err
}

// EchoServer serves l: every connection gets its bytes back, then a
// half-close.
func EchoServer(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}()
	}
}

func pattern(b []byte, seed, off int) {
	for i := range b {
		x := uint32(off+i)*2654435761 + uint32(seed)*40503
		b[i] = byte(x >> 24)
	}
}

// EchoTransfer sends size bytes to the guest's echo port and checks what
// comes back.
func EchoTransfer(ctx context.Context, target vsockdial.Target, seed, size int) error {
	c, err := vsockdial.Dial(ctx, target, EchoPort)
	if err != nil {
		return err
	}
	defer c.Close()
	// A stalled data path must fail the transfer, not hang the test.
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for off := 0; off < size; off += len(buf) {
			n := min(len(buf), size-off)
			pattern(buf[:n], seed, off)
			sent.Write(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				werr <- err
				return
			}
		}
		werr <- c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if e := <-werr; e != nil {
		return fmt.Errorf("conn %d: write: %v", seed, e)
	}
	if err != nil || n != int64(size) {
		return fmt.Errorf("conn %d: %d of %d bytes echoed: %v", seed, n, size, err)
	}
	if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		return fmt.Errorf("conn %d: echo checksum mismatch", seed)
	}
	return nil
}

// Control sends one command to the peer's control port and returns its
// reply line.
func Control(t testing.TB, target vsockdial.Target, cmd string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := vsockdial.Dial(ctx, target, ControlPort)
	if err != nil {
		t.Fatalf("control %q: %v", cmd, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintln(c, cmd)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("control %q: %v", cmd, err)
	}
	return strings.TrimSpace(line)
}
