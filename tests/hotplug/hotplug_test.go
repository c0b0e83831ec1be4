// Package hotplug tests hot-replaceable disks and NICs end to end: a VMM
// under cmd/stratovirt boots the Debian cloud kernel with empty slots, a
// QMP session plugs ext4 images (blockdev-add + device_add) that the
// guest finds by serial, mounts and reads, unplugs them (device_del,
// DEVICE_DELETED) and the guest sees the size drop to 0; then it plugs
// taps (netdev_add by ifname and by a getfd descriptor) and the guest
// sees carrier and pings the host, unplugs them and the carrier goes;
// finally quit. Like tests/native, TestMain builds on the host and
// re-runs the test binary in the lab.
package hotplug

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/tests/lab"
	vnet "github.com/stratovirt-go/stratovirt/vmm/virtio/net"
)

//go:embed init.sh
var initScript string

// Modules the guest loads (lab.GuestInitramfs adds dependencies).
var modules = []string{"virtio_mmio", "virtio_blk", "virtio_net"}

// Set by TestMain on the host; inherited by the test binary in the lab.
const (
	envVMM    = "HOTPLUG_TEST_VMM"
	envInitrd = "HOTPLUG_TEST_INITRD"
	envKernel = "HOTPLUG_TEST_KERNEL"
	envDir    = "HOTPLUG_TEST_DIR" // disk images
)

func TestMain(m *testing.M) {
	if os.Getenv(envVMM) == "" {
		dir, err := prepare()
		if err != nil {
			fmt.Fprintln(os.Stderr, "hotplug tests:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		code := lab.Exec(m)
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// prepare builds stratovirt, the initramfs and the disk images: boot.img
// (1 MiB of zeroes) and hot1.img, hot2.img, ext4 file systems made with
// mkfs.ext4 -d whose hello.txt says which image it is.
func prepare() (string, error) {
	dir, err := os.MkdirTemp("", "hotplug-test-")
	if err != nil {
		return "", err
	}
	g, err := lab.PrepareGuest(dir, initScript, modules)
	if err != nil {
		return dir, err
	}
	if err := os.WriteFile(filepath.Join(dir, "boot.img"), make([]byte, 1<<20), 0o644); err != nil {
		return dir, err
	}
	for i := 1; i <= 2; i++ {
		content := filepath.Join(dir, fmt.Sprintf("content%d", i))
		if err := os.MkdirAll(content, 0o755); err != nil {
			return dir, err
		}
		if err := os.WriteFile(filepath.Join(content, "hello.txt"), []byte(fmt.Sprintf("hello from image %d\n", i)), 0o644); err != nil {
			return dir, err
		}
		img := filepath.Join(dir, fmt.Sprintf("hot%d.img", i))
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", content, img, fmt.Sprintf("%dM", 8*i)).CombinedOutput(); err != nil {
			return dir, fmt.Errorf("mkfs.ext4: %v\n%s", err, out)
		}
	}
	os.Setenv(envVMM, g.VMM)
	os.Setenv(envInitrd, g.Initrd)
	os.Setenv(envKernel, g.Kernel)
	os.Setenv(envDir, dir)
	return dir, nil
}

// vmProc is a running VMM with its output collected line by line.
type vmProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu    sync.Mutex
	lines []string
}

func startVMM(t *testing.T, args ...string) *vmProc {
	t.Helper()
	cmd := exec.Command(os.Getenv(envVMM), args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &vmProc{t: t, cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, strings.TrimRight(sc.Text(), "\r"))
			p.mu.Unlock()
		}
	}()
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *vmProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine waits for a line matching the regexp re and returns its
// submatches.
func (p *vmProc) waitLine(re string, timeout time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if m := rx.FindStringSubmatch(l); m != nil {
				p.mu.Unlock()
				p.t.Logf("guest: %s", l)
				return m
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			p.t.Fatalf("VMM exited (%v) before printing %q:\n%s", p.err, re, p.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %q within %v:\n%s", re, timeout, p.output())
		}
	}
}

// qmpClient is a minimal QMP client.
type qmpClient struct {
	t      *testing.T
	c      *net.UnixConn
	rd     *bufio.Reader
	events []map[string]any
}

func dialQMP(t *testing.T, path string) *qmpClient {
	t.Helper()
	var c net.Conn
	var err error
	for range 400 {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dial QMP %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	q := &qmpClient{t: t, c: c.(*net.UnixConn), rd: bufio.NewReader(c)}
	if g := q.read(); g["QMP"] == nil {
		t.Fatalf("greeting %v", g)
	}
	q.ok("qmp_capabilities", nil)
	return q
}

func (q *qmpClient) read() map[string]any {
	q.t.Helper()
	q.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	line, err := q.rd.ReadString('\n')
	if err != nil {
		q.t.Fatalf("QMP read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		q.t.Fatalf("QMP sent %q: %v", line, err)
	}
	return m
}

// exec sends a command (with fd passed by SCM_RIGHTS if fd >= 0) and
// returns its reply, collecting events.
func (q *qmpClient) exec(cmd string, args map[string]any, fd int) map[string]any {
	q.t.Helper()
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := q.c.WriteMsgUnix(b, oob, nil); err != nil {
		q.t.Fatal(err)
	}
	for {
		m := q.read()
		if m["event"] != nil {
			q.events = append(q.events, m)
			continue
		}
		return m
	}
}

// ok runs a command that must succeed.
func (q *qmpClient) ok(cmd string, args map[string]any) {
	q.t.Helper()
	if r := q.exec(cmd, args, -1); r["return"] == nil {
		q.t.Fatalf("%s %v: %v", cmd, args, r)
	}
}

// takeEvent returns the named event seen so far, or nil.
func (q *qmpClient) takeEvent(name string) map[string]any {
	for i, e := range q.events {
		if e["event"] == name {
			q.events = append(q.events[:i], q.events[i+1:]...)
			return e
		}
	}
	return nil
}

// deviceDel unplugs id and checks the DEVICE_DELETED event.
func (q *qmpClient) deviceDel(id string) {
	q.t.Helper()
	q.ok("device_del", map[string]any{"id": id})
	ev := q.takeEvent("DEVICE_DELETED")
	if ev == nil {
		q.t.Fatalf("device_del %s: no DEVICE_DELETED before the reply", id)
	}
	if d, _ := ev["data"].(map[string]any); d["device"] != id {
		q.t.Errorf("DEVICE_DELETED %v, want device %s", ev, id)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestHotplugDiskAndNIC(t *testing.T) {
	dir := os.Getenv(envDir)
	sockDir, err := os.MkdirTemp("/tmp", "hp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "qmp.sock")
	// One boot drive (slot 0, /dev/vda); with QMP on, the VMM adds five
	// empty disk slots (six disks in all) and two empty NIC slots.
	p := startVMM(t, "-name", "hotplug", "-kernel", os.Getenv(envKernel), "-initrd", os.Getenv(envInitrd),
		"-m", "512M", "-smp", "2", "-serial", "stdio", "-api-channel", "unix:"+sock,
		"-drive", "id=boot0,file="+filepath.Join(dir, "boot.img")+",readonly=on,direct=off,serial=boot0",
		"-append", "console=ttyS0 reboot=k panic=1 quiet loglevel=4 test.disks=6 test.nics=2 test.serials=hot1,hot2 test.nicrounds=2")
	q := dialQMP(t, sock)
	start := time.Now()
	p.waitLine(`^READY`, 120*time.Second)
	t.Logf("guest ready after %v", time.Since(start).Round(time.Millisecond))

	// At boot: vda is the boot drive, vdb..vdf empty (size 0, no
	// serial), both NICs without carrier.
	out := p.output()
	for _, want := range []string{"DISK vda size=2048 serial=[boot0]", "DISK vdb size=0 serial=[]", "DISK vdf size=0 serial=[]",
		"NIC eth0 carrier=0", "NIC eth1 carrier=0"} {
		if !strings.Contains(out, want) {
			t.Errorf("boot report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "DISK vdg") {
		t.Errorf("more than six disks:\n%s", out)
	}

	// Disk 1 into the first free slot (slot 1, vdb), Kata's form.
	q.ok("blockdev-add", map[string]any{"driver": "raw", "node-name": "hot1", "read-only": true,
		"file":  map[string]any{"driver": "file", "filename": filepath.Join(dir, "hot1.img"), "aio": "native"},
		"cache": map[string]any{"direct": false}})
	q.ok("device_add", map[string]any{"id": "disk1", "driver": "virtio-blk-mmio", "drive": "hot1", "serial": "hot1"})
	m := p.waitLine(`^FOUND hot1 (vd[a-z]) size=(\d+)`, 60*time.Second)
	if m[1] != "vdb" || m[2] != "16384" {
		t.Errorf("hot1 found as %s with %s sectors, want vdb with 16384", m[1], m[2])
	}
	p.waitLine(`^CONTENT hot1 hello from image 1$`, 30*time.Second)
	p.waitLine(`^UNMOUNTED hot1`, 30*time.Second)
	q.deviceDel("disk1")
	p.waitLine(`^GONE hot1 vdb size=0 serial=\[\]`, 60*time.Second)

	// Disk 2 into slot 3 (vdd) by addr, StratoVirt's form.
	q.ok("blockdev-add", map[string]any{"node-name": "hot2", "read-only": true,
		"file": map[string]any{"filename": filepath.Join(dir, "hot2.img")}, "cache": map[string]any{"direct": false}})
	if r := q.exec("device_add", map[string]any{"id": "disk2", "driver": "virtio-blk-mmio", "drive": "hot2", "addr": "0"}, -1); r["error"] == nil {
		t.Errorf("device_add into the boot drive's slot: %v", r)
	}
	q.ok("device_add", map[string]any{"id": "disk2", "driver": "virtio-blk-mmio", "drive": "hot2", "serial": "hot2", "addr": "3"})
	m = p.waitLine(`^FOUND hot2 (vd[a-z]) size=(\d+)`, 60*time.Second)
	if m[1] != "vdd" || m[2] != "32768" {
		t.Errorf("hot2 found as %s with %s sectors, want vdd with 32768", m[1], m[2])
	}
	p.waitLine(`^CONTENT hot2 hello from image 2$`, 30*time.Second)
	p.waitLine(`^UNMOUNTED hot2`, 30*time.Second)
	q.deviceDel("disk2")
	p.waitLine(`^GONE hot2 vdd`, 60*time.Second)

	// NIC 1: a tap by name, created by the VMM.
	q.ok("netdev_add", map[string]any{"id": "net1", "ifname": "hptap1"})
	q.ok("device_add", map[string]any{"id": "nic1", "driver": "virtio-net-mmio", "netdev": "net1"})
	run(t, "ip", "addr", "add", "10.9.1.1/24", "dev", "hptap1")
	run(t, "ip", "link", "set", "hptap1", "up")
	p.waitLine(`^CARRIER UP 1 eth0`, 60*time.Second)
	p.waitLine(`^PING OK 1`, 60*time.Second)
	q.deviceDel("nic1")
	p.waitLine(`^CARRIER DOWN 1 eth0`, 60*time.Second)
	if _, err := net.InterfaceByName("hptap1"); err == nil {
		t.Error("tap hptap1 still exists after device_del (the VMM should have closed it)")
	}

	// NIC 2: a tap opened here and passed with getfd, into slot 1 (eth1).
	tap, err := vnet.OpenTap("hptap2")
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	run(t, "ip", "addr", "add", "10.9.2.1/24", "dev", "hptap2")
	run(t, "ip", "link", "set", "hptap2", "up")
	if r := q.exec("getfd", map[string]any{"fdname": "tapfd2"}, tap.Fd()); r["return"] == nil {
		t.Fatalf("getfd: %v", r)
	}
	q.ok("netdev_add", map[string]any{"id": "net2", "fds": "tapfd2"})
	q.ok("device_add", map[string]any{"id": "nic2", "driver": "virtio-net-mmio", "netdev": "net2", "addr": "1"})
	p.waitLine(`^CARRIER UP 2 eth1`, 60*time.Second)
	p.waitLine(`^PING OK 2`, 60*time.Second)
	q.deviceDel("nic2")
	p.waitLine(`^CARRIER DOWN 2 eth1`, 60*time.Second)
	p.waitLine(`^GUEST DONE`, 30*time.Second)
	if strings.Contains(p.output(), "TIMEOUT") || strings.Contains(p.output(), "FAILED") {
		t.Errorf("guest reported a failure:\n%s", p.output())
	}

	q.ok("quit", nil)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("VMM still running after quit:\n%s", p.output())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("VMM exit status %d after quit:\n%s", code, p.output())
	}
	t.Logf("whole run %v", time.Since(start).Round(time.Millisecond))
}
