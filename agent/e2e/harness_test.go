// Package e2e runs cmd/stratovirt-agent on the host over unix sockets,
// with Debian's runc and a busybox-static rootfs, and drives it through
// the ttrpc client and the stream handshake the host shim uses. The tests
// need root and runc; cgroup-v2 checks (stats, OOM, update) need the
// cgroup v2 memory controller, and where the host has none the whole
// binary is re-run inside the lab, which has it.
package e2e

import (
	"context"
	"crypto/sha256"
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

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

const (
	runcPath   = "/usr/sbin/runc"
	envAgent   = "AGENT_E2E_BINARY"
	envNoLab   = "AGENT_E2E_NO_LAB"
	cgroupRoot = "/sys/fs/cgroup"
)

var skipReason string

func cgroupV2Memory() bool {
	b, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers"))
	return err == nil && strings.Contains(string(b), "memory")
}

func TestMain(m *testing.M) {
	switch {
	case os.Geteuid() != 0:
		skipReason = "needs root"
	case func() bool { _, err := os.Stat(runcPath); return err != nil }():
		skipReason = "needs " + runcPath + " (apt-get install runc)"
	}
	if skipReason != "" {
		os.Exit(m.Run())
	}
	if os.Getenv(envAgent) == "" {
		dir, err := os.MkdirTemp("", "agent-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bin := filepath.Join(dir, "stratovirt-agent")
		root, err := lab.RepoRoot()
		if err == nil {
			cmd := exec.Command("go", "build", "-o", bin, "./cmd/stratovirt-agent")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, berr := cmd.CombinedOutput(); berr != nil {
				err = fmt.Errorf("build agent: %v\n%s", berr, out)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Setenv(envAgent, bin)
		code := 0
		if !cgroupV2Memory() && !lab.InLab() && os.Getenv(envNoLab) == "" {
			code = inLab()
		} else {
			code = m.Run()
		}
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// inLab re-runs this test binary in the lab, whose cgroup v2 hierarchy
// has the controllers the host lacks.
func inLab() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	args := []string{exe}
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-test.testlogfile=") && !strings.HasPrefix(a, "-test.paniconexit0") {
			args = append(args, a)
		}
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	fmt.Fprintln(os.Stderr, "agent e2e: no cgroup v2 memory controller on this host; running in the lab")
	res, err := lab.Run(context.Background(), lab.Options{
		Cmd: strings.Join(q, " "), Stdout: os.Stdout, Stderr: os.Stderr, Timeout: 20 * time.Minute,
		Env: []string{envAgent + "=" + os.Getenv(envAgent)},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent e2e: lab:", err)
		return 1
	}
	return res.ExitCode
}

// agent is one running stratovirt-agent and a client.
type agent struct {
	t       *testing.T
	dir     string
	rootfs  string
	streams string
	cmd     *exec.Cmd
	conn    net.Conn
	client  *ttrpc.Client
	api     agentv1.AgentService
	health  agentv1.HealthService
	spec    specs.Spec
	log     *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var applets = []string{"sh", "echo", "cat", "sleep", "head", "yes", "kill", "stty", "true", "false", "dd", "seq", "wc", "ps", "tr", "printf", "read"}

func startAgent(t *testing.T) *agent {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	dir, err := os.MkdirTemp("", "agent-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// A tmpfs keeps bundles and rootfs off overlay or 9p (the lab).
	if err := unix.Mount("e2e", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	a := &agent{t: t, dir: dir, rootfs: filepath.Join(dir, "rootfs"), streams: filepath.Join(dir, "streams.sock"), log: &syncBuf{}}
	t.Cleanup(a.stop)
	a.buildRootfs()
	sock := filepath.Join(dir, "agent.sock")
	a.cmd = exec.Command(os.Getenv(envAgent), "-listen", "unix://"+sock, "-stream-listen", "unix://"+a.streams,
		"-state-dir", filepath.Join(dir, "state"), "-runc", runcPath, "-guest=false", "-network=false", "-log-level", "debug", "-stream-attach-wait", "2s")
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.conn, err = net.Dial("unix", sock)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not listen: %v\n%s", err, a.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.client = ttrpc.NewClient(a.conn)
	a.api = agentv1.NewAgentClient(a.client)
	a.health = agentv1.NewHealthClient(a.client)

	out, err := exec.Command("sh", "-c", "cd "+dir+" && "+runcPath+" spec && cat config.json && rm config.json").Output()
	if err != nil {
		t.Fatal("runc spec:", err)
	}
	if err := json.Unmarshal(out, &a.spec); err != nil {
		t.Fatal(err)
	}
	a.spec.Root.Readonly = false
	return a
}

func (a *agent) buildRootfs() {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		a.t.Skip("needs busybox-static")
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		a.t.Fatal(err)
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root"} {
		os.MkdirAll(filepath.Join(a.rootfs, d), 0o755)
	}
	if err := os.WriteFile(filepath.Join(a.rootfs, "bin/busybox"), data, 0o755); err != nil {
		a.t.Fatal(err)
	}
	for _, ap := range applets {
		os.Symlink("busybox", filepath.Join(a.rootfs, "bin", ap))
	}
}

func (a *agent) stop() {
	if a.client != nil {
		a.client.Close()
	}
	if a.cmd != nil && a.cmd.Process != nil {
		a.cmd.Process.Signal(unix.SIGTERM)
		done := make(chan struct{})
		go func() { a.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			a.cmd.Process.Kill()
			<-done
		}
	}
	if a.t.Failed() {
		a.t.Logf("agent log:\n%s", a.log)
	}
	unix.Unmount(a.dir, unix.MNT_DETACH)
	os.RemoveAll(a.dir)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// specFor returns the default spec running args.
func (a *agent) specFor(args ...string) []byte {
	s := a.spec
	p := *s.Process
	p.Args = args
	p.Terminal = false
	s.Process = &p
	b, err := json.Marshal(&s)
	if err != nil {
		a.t.Fatal(err)
	}
	return b
}

func (a *agent) create(id string, spec []byte, stdio *agentv1.Stdio) {
	a.t.Helper()
	_, err := a.api.CreateContainer(ctxT(a.t, 30*time.Second), &agentv1.CreateContainerRequest{
		ContainerId: id, OciSpec: spec, Stdio: stdio,
		Rootfs: &agentv1.Storage{Name: "rootfs", Source: a.rootfs, Fstype: "bind"},
	})
	if err != nil {
		a.t.Fatalf("create %s: %v", id, err)
	}
}

func (a *agent) start(id string) {
	a.t.Helper()
	if _, err := a.api.StartContainer(ctxT(a.t, 30*time.Second), &agentv1.StartContainerRequest{ContainerId: id}); err != nil {
		a.t.Fatalf("start %s: %v", id, err)
	}
}

func (a *agent) wait(id, eid string, d time.Duration) *agentv1.WaitProcessResponse {
	a.t.Helper()
	r, err := a.api.WaitProcess(ctxT(a.t, d), &agentv1.WaitProcessRequest{ContainerId: id, ExecId: eid})
	if err != nil {
		a.t.Fatalf("wait %s/%s: %v", id, eid, err)
	}
	return r
}

func (a *agent) remove(id string) {
	a.t.Helper()
	if _, err := a.api.RemoveContainer(ctxT(a.t, 30*time.Second), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true}); err != nil {
		a.t.Fatalf("remove %s: %v", id, err)
	}
}

// removed checks that a removed container left neither runc's state nor
// its cgroup (the agent's default cgroup path) behind.
func (a *agent) removed(id string) {
	a.t.Helper()
	for _, p := range []string{filepath.Join(a.dir, "state", "runc", id), filepath.Join(cgroupRoot, "stratovirt", id)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			a.t.Errorf("container %s removed, %s left (%v)", id, p, err)
		}
	}
}

// dial opens one stream with the handshake.
func (a *agent) dial(kind stream.Kind, id, eid string) *net.UnixConn {
	a.t.Helper()
	c, err := net.Dial("unix", a.streams)
	if err != nil {
		a.t.Fatal(err)
	}
	h, err := stream.Header{Kind: kind, ContainerID: id, ExecID: eid}.MarshalBinary()
	if err != nil {
		a.t.Fatal(err)
	}
	if _, err := c.Write(h); err != nil {
		a.t.Fatal(err)
	}
	if err := stream.ReadReply(c); err != nil {
		a.t.Fatalf("stream %s %s/%s: %v", kind, id, eid, err)
	}
	return c.(*net.UnixConn)
}

// collector reads a stream to EOF in the background.
type collector struct {
	done chan struct{}
	n    int64
	sum  [32]byte
	data []byte
	keep bool
}

func collect(c net.Conn, keep bool) *collector {
	col := &collector{done: make(chan struct{}), keep: keep}
	go func() {
		defer close(col.done)
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				h.Write(buf[:n])
				col.n += int64(n)
				if keep {
					col.data = append(col.data, buf[:n]...)
				}
			}
			if err != nil {
				break
			}
		}
		copy(col.sum[:], h.Sum(nil))
		c.Close()
	}()
	return col
}

func (c *collector) wait(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		t.Fatal("stream did not reach EOF")
	}
	return string(c.data)
}

var _ = io.EOF

func (a *agent) dialRaw(h stream.Header) net.Conn {
	a.t.Helper()
	c, err := net.Dial("unix", a.streams)
	if err != nil {
		a.t.Fatal(err)
	}
	b, err := h.MarshalBinary()
	if err != nil {
		a.t.Fatal(err)
	}
	c.Write(b)
	return c
}
