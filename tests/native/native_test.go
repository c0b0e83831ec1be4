// Package native tests StratoVirt's native interface end to end: the seed
// document's command-line and JSON examples boot, a QMP session stops,
// continues and quits a running guest, -daemonize -pidfile, seccomp kills
// a VMM that breaks its filters, the allow-lists cover a whole VM life,
// and guest RAM on hugetlbfs and memfd. Like tests/boot, TestMain builds
// on the host and re-runs the test binary in the lab.
package native

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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

//go:embed init.sh
var initScript string

// Set by TestMain on the host; inherited by the test binary in the lab.
const (
	envVMM     = "NATIVE_TEST_VMM"
	envVMMTest = "NATIVE_TEST_VMM_SECCOMPTEST"
	envInitrd  = "NATIVE_TEST_INITRD"
	envKernel  = "NATIVE_TEST_KERNEL"
	envRootfs  = "NATIVE_TEST_ROOTFS"
)

// seedModules are the cloud kernel's drivers for the devices the seed
// examples attach (disk, NIC, console, vsock).
var seedModules = []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "vmw_vsock_virtio_transport"}

func TestMain(m *testing.M) {
	if os.Getenv(envVMM) == "" {
		dir, err := prepare()
		if err != nil {
			fmt.Fprintln(os.Stderr, "native tests:", err)
			os.Exit(1)
		}
		code := lab.Exec(m)
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func prepare() (string, error) {
	dir, err := os.MkdirTemp("", "native-test-")
	if err != nil {
		return "", err
	}
	root, err := lab.RepoRoot()
	if err != nil {
		return dir, err
	}
	vmm := filepath.Join(dir, "stratovirt")
	vmmTest := filepath.Join(dir, "stratovirt-seccomptest")
	for _, b := range []struct{ out, tags string }{{vmm, ""}, {vmmTest, "seccomptest"}} {
		build := exec.Command("go", "build", "-tags", b.tags, "-o", b.out, "./cmd/stratovirt")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return dir, fmt.Errorf("build stratovirt: %v\n%s", err, out)
		}
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := lab.GuestInitramfs(initrd, initScript, seedModules, nil); err != nil {
		return dir, err
	}
	// The seed examples' root disk: an ext4 image with a file to read.
	content := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(content, 0o755); err != nil {
		return dir, err
	}
	if err := os.WriteFile(filepath.Join(content, "hello"), []byte("seed-rootfs-ok\n"), 0o644); err != nil {
		return dir, err
	}
	image := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", content, image, "16M").CombinedOutput(); err != nil {
		return dir, fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	os.Setenv(envRootfs, image)
	k, err := lab.GuestKernel()
	if err != nil {
		return dir, err
	}
	os.Setenv(envVMM, vmm)
	os.Setenv(envVMMTest, vmmTest)
	os.Setenv(envInitrd, initrd)
	os.Setenv(envKernel, k.Image)
	return dir, nil
}

// vmProc is a running VMM with its output collected line by line.
type vmProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	start time.Time
	done  chan struct{}
	err   error

	mu    sync.Mutex
	lines []stamped
	cond  *sync.Cond
}

type stamped struct {
	at   time.Time
	text string
}

func startVMM(t *testing.T, bin string, env []string, args ...string) *vmProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &vmProc{t: t, cmd: cmd, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, stamped{time.Now(), strings.TrimRight(sc.Text(), "\r")})
			p.cond.Broadcast()
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
	t.Logf("started %s %s", filepath.Base(bin), strings.Join(args, " "))
	return p
}

func (p *vmProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines {
		b.WriteString(l.text + "\n")
	}
	return b.String()
}

// waitLine waits for a line containing s and returns when it came.
func (p *vmProc) waitLine(s string, timeout time.Duration) time.Time {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l.text, s) {
				p.mu.Unlock()
				return l.at
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			p.t.Fatalf("VMM exited (%v) before printing %q:\n%s", p.err, s, p.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %q within %v:\n%s", s, timeout, p.output())
		}
	}
}

// count returns how many lines contain s.
func (p *vmProc) count(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l.text, s) {
			n++
		}
	}
	return n
}

// wait waits for the VMM to exit and returns its exit code (-1 with a
// signal).
func (p *vmProc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("VMM still running after %v:\n%s", timeout, p.output())
	}
	p.t.Logf("VMM exited after %v: %v", time.Since(p.start).Round(time.Millisecond), p.err)
	return p.cmd.ProcessState.ExitCode()
}

// qmpClient is a minimal QMP client.
type qmpClient struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
	// events seen while waiting for replies
	events []map[string]any
}

func dialQMP(t *testing.T, path string) *qmpClient {
	t.Helper()
	var c net.Conn
	var err error
	for i := 0; i < 200; i++ {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dial QMP %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	q := &qmpClient{t: t, c: c, rd: bufio.NewReader(c)}
	if g := q.read(); g["QMP"] == nil {
		t.Fatalf("greeting %v", g)
	}
	if r := q.exec("qmp_capabilities"); r["return"] == nil {
		t.Fatalf("qmp_capabilities: %v", r)
	}
	return q
}

func (q *qmpClient) read() map[string]any {
	q.t.Helper()
	q.c.SetReadDeadline(time.Now().Add(30 * time.Second))
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

// exec runs a command and returns its reply, collecting events.
func (q *qmpClient) exec(cmd string) map[string]any {
	q.t.Helper()
	if _, err := fmt.Fprintf(q.c, `{"execute":%q}`+"\n", cmd); err != nil {
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

// event waits for the named event (or finds it among those seen).
func (q *qmpClient) event(name string) map[string]any {
	q.t.Helper()
	for i, e := range q.events {
		if e["event"] == name {
			q.events = append(q.events[:i], q.events[i+1:]...)
			return e
		}
	}
	for {
		m := q.read()
		if m["event"] == name {
			return m
		}
		q.events = append(q.events, m)
	}
}

func shortTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "nt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
