// Package vsock boots the Debian cloud kernel under cmd/stratovirt with a
// vsock device (both backends) and a balloon, with a static Go peer in
// the initramfs, and checks host-to-guest and guest-to-host streams (32
// parallel connections, large transfers verified by SHA-256) and that
// inflating the balloon lowers the VMM's RSS while deflate-on-oom gives
// the guest its memory back. Like tests/blk it prepares everything on
// the host and runs in the nested-KVM lab unless the host's KVM can boot
// Linux.
package vsock

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mdvsock "github.com/mdlayher/vsock"

	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

var bin files

func TestMain(m *testing.M) {
	if f, ok := filesFromEnv(); ok {
		bin = f
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vsock-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := prepare(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vsock tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	f.setEnv()
	bin = f
	code := lab.Exec(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuf collects the VMM's output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type vm struct {
	cmd      *exec.Cmd
	out, err *syncBuf
	done     chan error
}

// startVM boots the guest and waits for the peer to listen.
func startVM(t *testing.T, mem string, extra ...string) *vm {
	t.Helper()
	args := append([]string{"-name", "vsock-test", "-kernel", bin.Kernel, "-initrd", bin.Initrd, "-m", mem, "-smp", "2",
		"-serial", "stdio"}, extra...)
	args = append(args, "-append", "console=ttyS0 reboot=k panic=1 quiet loglevel=3")
	v := &vm{cmd: exec.Command(bin.VMM, args...), out: &syncBuf{}, err: &syncBuf{}, done: make(chan error, 1)}
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.err
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.done <- v.cmd.Wait() }()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		<-v.done
		if t.Failed() {
			t.Logf("VMM stdout:\n%s\nstderr:\n%s", v.out.String(), v.err.String())
		}
	})
	deadline := time.After(180 * time.Second)
	for !strings.Contains(v.out.String(), "PEER READY") {
		select {
		case err := <-v.done:
			v.done <- err
			t.Fatalf("VMM exited before the guest peer was ready: %v", err)
		case <-deadline:
			t.Fatal("guest peer not ready after 180s")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return v
}

// echoServer serves l: every connection gets its bytes back, then a
// half-close.
func echoServer(l net.Listener) {
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

// echoTransfer sends size bytes to the guest's echo port and checks what
// comes back.
func echoTransfer(ctx context.Context, target vsockdial.Target, seed, size int) error {
	c, err := vsockdial.Dial(ctx, target, 1024)
	if err != nil {
		return err
	}
	defer c.Close()
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

// control sends one command to the peer's control port and returns its
// reply line.
func control(t *testing.T, target vsockdial.Target, cmd string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := vsockdial.Dial(ctx, target, 1030)
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

func mib(n int, d time.Duration) string {
	return fmt.Sprintf("%.1f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

// exercise runs the stream checks against a booted guest; hostListen is
// where the guest's connections to host port 2000 arrive.
func exercise(t *testing.T, target vsockdial.Target, hostListen net.Listener) {
	go echoServer(hostListen)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// Host to guest: 32 parallel connections of 1 MiB each.
	const conns, each = 32, 1 << 20
	start := time.Now()
	errs := make(chan error, conns)
	for i := range conns {
		go func() { errs <- echoTransfer(ctx, target, i, each) }()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error("host->guest:", err)
		}
	}
	t.Logf("host->guest: %d parallel echo connections of 1 MiB in %v", conns, time.Since(start).Round(time.Millisecond))

	// One large transfer each way.
	const large = 32 << 20
	start = time.Now()
	if err := echoTransfer(ctx, target, 99, large); err != nil {
		t.Error("host->guest large:", err)
	}
	t.Logf("host->guest: 32 MiB echoed (both directions) at %s", mib(2*large, time.Since(start)))

	// Guest to host, through the peer's control port.
	start = time.Now()
	if r := control(t, target, fmt.Sprintf("connect 2000 %d %d", conns, each), 120*time.Second); !strings.HasPrefix(r, "OK") {
		t.Errorf("guest->host parallel: %s", r)
	}
	t.Logf("guest->host: %d parallel echo connections of 1 MiB in %v", conns, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if r := control(t, target, fmt.Sprintf("connect 2000 1 %d", large), 120*time.Second); !strings.HasPrefix(r, "OK") {
		t.Errorf("guest->host large: %s", r)
	}
	t.Logf("guest->host: 32 MiB echoed (both directions) at %s", mib(2*large, time.Since(start)))
}

func TestVsockUnixBackend(t *testing.T) {
	dir := t.TempDir()
	uds := filepath.Join(dir, "v.sock")
	l, err := net.Listen("unix", uds+"_2000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	startVM(t, "512M", "-device", "vsock,id=vsock0,guest-cid=3,backend=unix,uds-path="+uds)
	exercise(t, vsockdial.Target{UDSPath: uds}, l)
}

func TestVsockVhostBackend(t *testing.T) {
	if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
		t.Skip("no /dev/vhost-vsock")
	}
	l, err := mdvsock.Listen(2000, nil)
	if err != nil {
		t.Skipf("host AF_VSOCK listen: %v", err)
	}
	defer l.Close()
	const cid = 7
	startVM(t, "512M", "-device", fmt.Sprintf("vsock,id=vsock0,guest-cid=%d,backend=vhost", cid))
	exercise(t, vsockdial.Target{CID: cid}, l)

	// A second VM cannot take the same CID.
	out, err := exec.Command(bin.VMM, "-kernel", bin.Kernel, "-initrd", bin.Initrd,
		"-device", fmt.Sprintf("vsock,id=v,guest-cid=%d,backend=vhost", cid)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already in use") {
		t.Errorf("second VM with guest-cid %d: %v\n%s", cid, err, out)
	}
}
