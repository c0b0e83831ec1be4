// Package net boots the Debian cloud kernel under cmd/stratovirt with two
// virtio-net NICs on taps in a network namespace made by the test (one
// tap named on the command line, one opened by the test with
// OpenTapInNetNS and passed as an inherited descriptor, the shim's way),
// a virtio-console on a unix socket and virtio-rng, and checks ping, an
// 8 MiB TCP transfer each way with SHA-256 (each virtio-net backend), the console round trip and
// /dev/hwrng. Like tests/blk it prepares binaries and the initramfs on the
// host, then runs in the nested-KVM lab unless the host's KVM can boot
// Linux.
package net

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/tests/net/nettest"
	vnet "github.com/stratovirt-go/stratovirt/vmm/virtio/net"
)

var files nettest.Files

func TestMain(m *testing.M) {
	if f, ok := nettest.FromEnv(); ok {
		files = f
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "net-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := nettest.Prepare(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "net tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	f.SetEnv()
	files = f
	code := lab.Exec(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

func need(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and taps")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
}

const (
	mac0 = "0e:90:df:9f:a8:88"
	mac1 = "0e:90:df:9f:a8:89"
)

// startHost runs nettool inside ns and returns its output when done.
func startHost(t *testing.T, ns *nettest.NetNS, args ...string) func() string {
	t.Helper()
	cmd := ns.Command(append([]string{files.NetTool}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return func() string {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		return out.String()
	}
}

var shaLine = regexp.MustCompile(`(SENT|RECV) (\d+) ([0-9a-f]{64}) ([0-9.]+) MB/s`)

func transfer(s string) (kind, n, sha, rate string) {
	m := shaLine.FindStringSubmatch(s)
	if m == nil {
		return "", "", "", ""
	}
	return m[1], m[2], m[3], m[4]
}

// TestNetConsoleRNG runs the checks with each virtio-net backend: the
// VMM's own, and the kernel's vhost-net (vhost=on) for both NICs (the
// named tap with an iothread, and the inherited descriptor). Each
// direction moves 8 MiB: long heavy traffic is what freezes the lab's
// emulated SVM (the lab VM stops whole; 1 run in 2 with 100 MiB on
// 2026-11-26, 3 tries in 3 with 32 MiB and vhost-net in CI on
// 2026-11-27), and the SHA-256 check does not need more. Throughput is
// the bench's business (tests/bench/net).
func TestNetConsoleRNG(t *testing.T) {
	need(t)
	for _, backend := range []struct {
		name, opt string
		size      int
	}{{"userspace", "", 8 << 20}, {"vhost", ",vhost=on", 8 << 20}} {
		t.Run(backend.name, func(t *testing.T) {
			if backend.opt != "" {
				if _, err := os.Stat(vnet.VhostDevice); err != nil {
					t.Skipf("no vhost-net: %v", err)
				}
			}
			testNetConsoleRNG(t, backend.opt, backend.size)
		})
	}
}

func testNetConsoleRNG(t *testing.T, netdevOpt string, size int) {
	ns, err := nettest.NewNetNS(fmt.Sprintf("svtnet%d", os.Getpid()))
	if err != nil {
		t.Skipf("network namespace: %v", err)
	}
	defer ns.Close()
	if err := ns.AddTap("tap0", "10.0.2.1/24"); err != nil {
		t.Fatal(err)
	}
	// The second NIC's tap is opened by us inside the namespace and
	// handed to the VMM as descriptor 3.
	tapFile, err := vnet.OpenTapInNetNS(ns.Path(), "tap1")
	if err != nil {
		t.Fatal(err)
	}
	defer tapFile.Close()
	if err := ns.ConfigureIf("tap1", "10.0.3.1/24"); err != nil {
		t.Fatal(err)
	}

	recvOut := startHost(t, ns, "recv", "10.0.2.1:5001")
	sendOut := startHost(t, ns, "send", "10.0.2.2:5002", fmt.Sprint(size))

	sock := filepath.Join(t.TempDir(), "console.sock")
	args := []string{files.VMM, "-name", "net-test", "-kernel", files.Kernel, "-initrd", files.Initrd,
		"-m", "512M", "-smp", "2", "-serial", "stdio",
		"-iothread", "id=iothread1",
		"-netdev", "id=net0,netdev=tap0,mac=" + mac0 + ",iothread=iothread1" + netdevOpt,
		"-netdev", "id=net1,fds=3,mac=" + mac1 + netdevOpt,
		"-chardev", "id=console0,path=" + sock,
		"-rng", "getrandom",
		"-append", fmt.Sprintf("console=ttyS0 reboot=k panic=1 quiet loglevel=4 test.size=%d test.nic=%s/10.0.2.2/10.0.2.1 test.nic=%s/10.0.3.2/10.0.3.1",
			size, mac0, mac1)}
	cmd := ns.Command(args...)
	cmd.ExtraFiles = []*os.File{tapFile}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Console client: wait for the socket, read the guest's line, answer.
	consoleDone := make(chan string, 1)
	go func() {
		var c net.Conn
		for i := 0; i < 3000; i++ {
			if c, err = net.Dial("unix", sock); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if c == nil {
			consoleDone <- "dial: " + err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			consoleDone <- "read: " + err.Error()
			return
		}
		c.Write([]byte("ping-from-host\n"))
		consoleDone <- strings.TrimSpace(line)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(9 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("VM did not end within 9 min\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	t.Logf("VM ran %v (exit %v)", time.Since(start).Round(time.Millisecond), err)
	s := strings.ReplaceAll(out.String(), "\r\n", "\n")
	for _, l := range strings.Split(s, "\n") {
		for _, p := range []string{"NIC ", "PING ", "SENT ", "RECV ", "CONSOLE", "HWRNG ", "NETTOOL", "INSMOD"} {
			if strings.HasPrefix(l, p) {
				t.Log(l)
			}
		}
	}
	if err != nil || !strings.Contains(s, "GUEST DONE") {
		t.Fatalf("stratovirt: %v\nstdout:\n%s\nstderr:\n%s", err, s, errOut.String())
	}
	for _, want := range []string{"PING 10.0.2.1 OK", "PING 10.0.3.1 OK", "CONSOLE-IN ping-from-host"} {
		if !strings.Contains(s, want) {
			t.Errorf("guest output lacks %q", want)
		}
	}
	if !regexp.MustCompile(`HWRNG virtio_rng\.\d+ 65536`).MatchString(s) {
		t.Error("guest did not read 64 KiB from /dev/hwrng backed by virtio_rng")
	}
	select {
	case got := <-consoleDone:
		if got != "CONSOLE-OUT from guest" {
			t.Errorf("console client got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Error("console client did not finish")
	}
	// Guest -> host and host -> guest transfers.
	hr, gs := recvOut(), ""
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "SENT ") {
			gs = l
		}
	}
	k1, n1, sha1, rate1 := transfer(gs)
	k2, n2, sha2, _ := transfer(hr)
	if k1 != "SENT" || k2 != "RECV" || n1 != fmt.Sprint(size) || n1 != n2 || sha1 != sha2 {
		t.Errorf("guest->host: guest %q, host %q", gs, hr)
	} else {
		t.Logf("guest->host %s bytes, sha256 %s, %s MB/s", n1, sha1[:16], rate1)
	}
	hs, gr := sendOut(), ""
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "RECV ") {
			gr = l
		}
	}
	k1, n1, sha1, _ = transfer(hs)
	k2, n2, sha2, rate2 := transfer(gr)
	if k1 != "SENT" || k2 != "RECV" || n1 != fmt.Sprint(size) || n1 != n2 || sha1 != sha2 {
		t.Errorf("host->guest: host %q, guest %q", hs, gr)
	} else {
		t.Logf("host->guest %s bytes, sha256 %s, %s MB/s", n1, sha1[:16], rate2)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("console socket left behind: %v", err)
	}
}
