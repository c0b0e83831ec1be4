package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
)

func TestHealthAndDetails(t *testing.T) {
	a := startAgent(t)
	r, err := a.health.Check(ctxT(t, 10*time.Second), &agentv1.CheckRequest{})
	if err != nil || r.Status != agentv1.CheckResponse_SERVING {
		t.Fatalf("check: %v, %v", r, err)
	}
	d, err := a.api.GetGuestDetails(ctxT(t, 10*time.Second), &agentv1.GetGuestDetailsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d.KernelRelease == "" || d.OnlineCpus == 0 || d.MemTotalBytes == 0 || !strings.Contains(d.RuncVersion, "runc version") {
		t.Fatalf("details: %v", d)
	}
}

// Output on both streams, the exit status, and the exit codes 0/1 and
// deaths by signal (137, 143) of init processes.
func TestInitExitCodesAndOutput(t *testing.T) {
	a := startAgent(t)
	for i, tc := range []struct {
		script   string
		status   int32
		out, err string
	}{
		{"echo out; echo err >&2; exit 0", 0, "out\n", "err\n"},
		{"echo one; exit 1", 1, "one\n", ""},
		{"exit 3", 3, "", ""},
	} {
		id := "exit" + strconv.Itoa(i)
		a.create(id, a.specFor("sh", "-c", tc.script), &agentv1.Stdio{Stdout: true, Stderr: true})
		out := collect(a.dial(stream.Stdout, id, ""), true)
		errs := collect(a.dial(stream.Stderr, id, ""), true)
		a.start(id)
		w := a.wait(id, "", 30*time.Second)
		// Output is complete when the exit is reported.
		if o, e := out.wait(t, time.Second), errs.wait(t, time.Second); o != tc.out || e != tc.err {
			t.Errorf("%q: stdout %q stderr %q, want %q %q", tc.script, o, e, tc.out, tc.err)
		}
		if w.ExitStatus != tc.status || w.ExitedAtUnixNano == 0 {
			t.Errorf("%q: exit %d at %d, want %d", tc.script, w.ExitStatus, w.ExitedAtUnixNano, tc.status)
		}
		a.remove(id)
	}
	// A container's init ignores signals it has no handler for (even its
	// own SIGKILL), so deaths by signal are checked on exec processes;
	// the init's SIGKILL from the host is in TestExecStdinSignal.
	a.create("sig", a.specFor("sleep", "1000"), nil)
	a.start("sig")
	for i, tc := range []struct {
		script string
		status int32
	}{{"kill -KILL $$", 137}, {"kill -TERM $$; sleep 5", 143}, {"exit 1", 1}, {"true", 0}} {
		eid := "e" + strconv.Itoa(i)
		a.exec("sig", eid, nil, false, "sh", "-c", tc.script)
		if w := a.wait("sig", eid, 30*time.Second); w.ExitStatus != tc.status {
			t.Errorf("exec %q: exit %d, want %d", tc.script, w.ExitStatus, tc.status)
		}
	}
	a.remove("sig")
}

func (a *agent) exec(id, eid string, stdio *agentv1.Stdio, terminal bool, args ...string) {
	a.t.Helper()
	p := *a.spec.Process
	p.Args, p.Terminal = args, terminal
	b, _ := json.Marshal(&p)
	if _, err := a.api.ExecProcess(ctxT(a.t, 30*time.Second), &agentv1.ExecProcessRequest{ContainerId: id, ExecId: eid, Process: b, Stdio: stdio}); err != nil {
		a.t.Fatalf("exec %s/%s: %v", id, eid, err)
	}
}

func (a *agent) signal(id, eid string, sig unix.Signal, all bool) {
	a.t.Helper()
	if _, err := a.api.SignalProcess(ctxT(a.t, 30*time.Second), &agentv1.SignalProcessRequest{ContainerId: id, ExecId: eid, Signal: uint32(sig), All: all}); err != nil {
		a.t.Fatalf("signal %s/%s: %v", id, eid, err)
	}
}

// Exec processes: stdin round trip (EOF by closing the stream, then by
// CloseStdin), signals to one exec (143) and to the init (137), list pids.
func TestExecStdinSignal(t *testing.T) {
	a := startAgent(t)
	a.create("c", a.specFor("sleep", "1000"), nil)
	a.start("c")

	// A stream dialed before the exec exists waits for it.
	early := make(chan error, 1)
	ec := a.dialRaw(stream.Header{Kind: stream.Stdout, ContainerID: "c", ExecID: "cat1"})
	go func() { early <- stream.ReadReply(ec) }()
	time.Sleep(100 * time.Millisecond)
	a.exec("c", "cat1", &agentv1.Stdio{Stdin: true, Stdout: true}, false, "cat")
	in := a.dial(stream.Stdin, "c", "cat1")
	if err := <-early; err != nil {
		t.Fatal("early stream:", err)
	}
	out := collect(ec, true)
	msg := strings.Repeat("hello stdin\n", 1000)
	if _, err := in.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	in.CloseWrite()
	if w := a.wait("c", "cat1", 30*time.Second); w.ExitStatus != 0 {
		t.Fatalf("cat exit %d", w.ExitStatus)
	}
	if got := out.wait(t, time.Second); got != msg {
		t.Fatalf("stdin round trip: got %d bytes, want %d", len(got), len(msg))
	}

	a.exec("c", "cat2", &agentv1.Stdio{Stdin: true, Stdout: true}, false, "sh", "-c", "cat; echo done")
	in = a.dial(stream.Stdin, "c", "cat2")
	out = collect(a.dial(stream.Stdout, "c", "cat2"), true)
	in.Write([]byte("x\n"))
	time.Sleep(100 * time.Millisecond)
	if _, err := a.api.CloseStdin(ctxT(t, 10*time.Second), &agentv1.CloseStdinRequest{ContainerId: "c", ExecId: "cat2"}); err != nil {
		t.Fatal(err)
	}
	if w := a.wait("c", "cat2", 30*time.Second); w.ExitStatus != 0 || out.wait(t, time.Second) != "x\ndone\n" {
		t.Fatalf("CloseStdin: exit %d output %q", w.ExitStatus, out.data)
	}

	a.exec("c", "sleeper", nil, false, "sleep", "1000")
	pids, err := a.api.ListProcesses(ctxT(t, 10*time.Second), &agentv1.ListProcessesRequest{ContainerId: "c"})
	if err != nil || len(pids.Pids) < 2 {
		t.Fatalf("list processes: %v, %v", pids, err)
	}
	a.signal("c", "sleeper", unix.SIGTERM, false)
	if w := a.wait("c", "sleeper", 30*time.Second); w.ExitStatus != 143 {
		t.Fatalf("SIGTERM to exec: status %d, want 143", w.ExitStatus)
	}
	_, err = a.api.SignalProcess(ctxT(t, 10*time.Second), &agentv1.SignalProcessRequest{ContainerId: "c", ExecId: "sleeper", Signal: 9})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("signal to an exited process: %v, want NotFound", err)
	}
	if _, err := a.api.ExecProcess(ctxT(t, 10*time.Second), &agentv1.ExecProcessRequest{ContainerId: "c", ExecId: "sleeper", Process: []byte(`{"args":["true"],"cwd":"/"}`)}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate exec id: %v", err)
	}
	if _, err := a.api.RemoveContainer(ctxT(t, 10*time.Second), &agentv1.RemoveContainerRequest{ContainerId: "c"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("remove of a running container without force: %v", err)
	}
	a.signal("c", "", unix.SIGKILL, false)
	if w := a.wait("c", "", 30*time.Second); w.ExitStatus != 137 {
		t.Fatalf("SIGKILL to init: status %d, want 137", w.ExitStatus)
	}
	_, err = a.api.SignalProcess(ctxT(t, 10*time.Second), &agentv1.SignalProcessRequest{ContainerId: "c", Signal: 9})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("signal to an exited init: %v, want NotFound", err)
	}
	a.remove("c")
	a.removed("c")
	if _, err := a.api.StartContainer(ctxT(t, 10*time.Second), &agentv1.StartContainerRequest{ContainerId: "c"}); status.Code(err) != codes.NotFound {
		t.Fatalf("start of a removed container: %v", err)
	}
}

// A terminal process sees the window size the host sets.
func TestTTYResize(t *testing.T) {
	a := startAgent(t)
	a.create("tty", a.specFor("sleep", "1000"), nil)
	a.start("tty")
	a.exec("tty", "sh", &agentv1.Stdio{Stdin: true, Stdout: true}, true, "sh", "-c", "read x; stty size; exit 5")
	in := a.dial(stream.Stdin, "tty", "sh")
	out := collect(a.dial(stream.Stdout, "tty", "sh"), true)
	if _, err := a.api.TtyWinResize(ctxT(t, 10*time.Second), &agentv1.TtyWinResizeRequest{ContainerId: "tty", ExecId: "sh", Rows: 33, Columns: 77}); err != nil {
		t.Fatal(err)
	}
	in.Write([]byte("go\n"))
	w := a.wait("tty", "sh", 30*time.Second)
	got := out.wait(t, time.Second)
	if w.ExitStatus != 5 || !strings.Contains(got, "33 77") {
		t.Fatalf("tty: exit %d output %q", w.ExitStatus, got)
	}
	if _, err := a.api.TtyWinResize(ctxT(t, 10*time.Second), &agentv1.TtyWinResizeRequest{ContainerId: "tty", Rows: 1, Columns: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("resize of a process without a terminal: %v", err)
	}
	a.remove("tty")
}

// 64 MiB through stdout, checked by size and SHA-256, complete when the
// exit is reported.
func TestLargeStdout(t *testing.T) {
	a := startAgent(t)
	const size = 64 << 20
	a.create("big", a.specFor("sh", "-c", "yes 0123456789abcdef | head -c 67108864"), &agentv1.Stdio{Stdout: true})
	out := collect(a.dial(stream.Stdout, "big", ""), false)
	a.start("big")
	w := a.wait("big", "", 5*time.Minute)
	select {
	case <-out.done:
	case <-time.After(5 * time.Second):
		t.Fatal("stdout incomplete after the exit was reported")
	}
	want := sha256.Sum256(bytes.Repeat([]byte("0123456789abcdef\n"), size/17+1)[:size])
	if w.ExitStatus != 0 || out.n != size || out.sum != want {
		t.Fatalf("exit %d, %d bytes, sum %x; want 0, %d, %x", w.ExitStatus, out.n, out.sum, size, want)
	}
	a.remove("big")
}

// Children that outlive the container's init, or an exec, do not hold up
// the exit report.
func TestOrphans(t *testing.T) {
	a := startAgent(t)
	a.create("orph", a.specFor("sh", "-c", "sleep 100 & sleep 100 & echo started; exit 4"), &agentv1.Stdio{Stdout: true})
	out := collect(a.dial(stream.Stdout, "orph", ""), true)
	a.start("orph")
	start := time.Now()
	if w := a.wait("orph", "", 30*time.Second); w.ExitStatus != 4 {
		t.Fatalf("init exit %d, want 4", w.ExitStatus)
	}
	if got := out.wait(t, time.Second); got != "started\n" || time.Since(start) > 10*time.Second {
		t.Fatalf("output %q after %v", got, time.Since(start))
	}
	a.remove("orph")

	a.create("orph2", a.specFor("sleep", "1000"), nil)
	a.start("orph2")
	a.exec("orph2", "bg", &agentv1.Stdio{Stdout: true}, false, "sh", "-c", "sleep 100 & echo hi")
	out = collect(a.dial(stream.Stdout, "orph2", "bg"), true)
	start = time.Now()
	if w := a.wait("orph2", "bg", 30*time.Second); w.ExitStatus != 0 {
		t.Fatalf("exec exit %d", w.ExitStatus)
	}
	if got := out.wait(t, 5*time.Second); got != "hi\n" || time.Since(start) > 10*time.Second {
		t.Fatalf("exec output %q after %v", got, time.Since(start))
	}
	a.signal("orph2", "", unix.SIGKILL, true)
	a.wait("orph2", "", 30*time.Second)
	a.remove("orph2")
}

// Pause freezes the container: its ticking output stops, and goes on
// after resume.
func TestPauseResume(t *testing.T) {
	a := startAgent(t)
	a.create("p", a.specFor("sh", "-c", "while true; do echo t; sleep 0.05; done"), &agentv1.Stdio{Stdout: true})
	conn := a.dial(stream.Stdout, "p", "")
	counts := make(chan int, 1)
	var n int
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			n += k
			select {
			case <-counts:
			default:
			}
			counts <- n
			if err != nil {
				return
			}
		}
	}()
	a.start("p")
	time.Sleep(500 * time.Millisecond)
	if _, err := a.api.PauseContainer(ctxT(t, 30*time.Second), &agentv1.PauseContainerRequest{ContainerId: "p"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	c1 := <-counts
	time.Sleep(700 * time.Millisecond)
	var c2 int
	select {
	case c2 = <-counts:
	default:
		c2 = c1
	}
	if c1 == 0 || c2 != c1 {
		t.Fatalf("output while paused: %d then %d bytes", c1, c2)
	}
	if _, err := a.api.ResumeContainer(ctxT(t, 30*time.Second), &agentv1.ResumeContainerRequest{ContainerId: "p"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if c3 := <-counts; c3 <= c2 {
		t.Fatalf("no output after resume: %d bytes", c3)
	}
	a.remove("p")
}

func needCgroupV2(t *testing.T) {
	if !cgroupV2Memory() {
		t.Skip("needs the cgroup v2 memory controller (runs in the lab)")
	}
}

// Stats, resource update and OOM detection on cgroup v2.
func TestStatsUpdateOOM(t *testing.T) {
	a := startAgent(t)
	needCgroupV2(t)
	a.create("s", a.specFor("sleep", "1000"), nil)
	a.start("s")
	st, err := a.api.StatsContainer(ctxT(t, 10*time.Second), &agentv1.StatsContainerRequest{ContainerId: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Memory.UsageBytes == 0 || st.Pids.Current < 1 || st.Cpu == nil {
		t.Fatalf("stats: %v", st)
	}
	limit := int64(64)
	res, _ := json.Marshal(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}})
	if _, err := a.api.UpdateContainer(ctxT(t, 30*time.Second), &agentv1.UpdateContainerRequest{ContainerId: "s", Resources: res}); err != nil {
		t.Fatal(err)
	}
	st, err = a.api.StatsContainer(ctxT(t, 10*time.Second), &agentv1.StatsContainerRequest{ContainerId: "s"})
	if err != nil || st.Pids.Limit != 64 {
		t.Fatalf("pids limit after update: %v, %v", st.GetPids(), err)
	}
	a.remove("s")

	// A 32 MiB container that doubles a string until it is killed.
	var spec specs.Spec
	json.Unmarshal(a.specFor("sh", "-c", "x=0123456789; while true; do x=$x$x; done"), &spec)
	mem := int64(32 << 20)
	spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &mem, Swap: &mem}}
	b, _ := json.Marshal(&spec)
	a.create("oom", b, nil)
	a.start("oom")
	ev, err := a.api.GetOOMEvent(ctxT(t, 60*time.Second), &agentv1.GetOOMEventRequest{})
	if err != nil {
		t.Fatal("OOM event:", err)
	}
	if ev.ContainerId != "oom" || ev.OomKills < 1 {
		t.Fatalf("OOM event %v", ev)
	}
	if w := a.wait("oom", "", 30*time.Second); w.ExitStatus != 137 {
		t.Fatalf("OOM-killed init: status %d, want 137", w.ExitStatus)
	}
	a.remove("oom")
}

func TestCreateErrors(t *testing.T) {
	a := startAgent(t)
	ctx := ctxT(t, 30*time.Second)
	for name, req := range map[string]*agentv1.CreateContainerRequest{
		"bad id":    {ContainerId: "../x", OciSpec: a.specFor("true"), Rootfs: &agentv1.Storage{Source: a.rootfs, Fstype: "bind"}},
		"bad spec":  {ContainerId: "x", OciSpec: []byte("{"), Rootfs: &agentv1.Storage{Source: a.rootfs, Fstype: "bind"}},
		"no rootfs": {ContainerId: "x", OciSpec: a.specFor("true")},
	} {
		if _, err := a.api.CreateContainer(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	// runc refuses: the error comes back and nothing is left behind.
	if _, err := a.api.CreateContainer(ctx, &agentv1.CreateContainerRequest{
		ContainerId: "x", OciSpec: a.specFor("/no/such/binary"),
		Rootfs: &agentv1.Storage{Source: a.rootfs, Fstype: "bind"},
	}); err == nil || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Fatalf("create with a missing binary: %v", err)
	}
	a.create("x", a.specFor("true"), nil)
	a.start("x")
	if w := a.wait("x", "", 30*time.Second); w.ExitStatus != 0 {
		t.Fatalf("exit %d", w.ExitStatus)
	}
	a.remove("x")
	// A stream for an unknown process is refused after the wait.
	c := a.dialRaw(stream.Header{Kind: stream.Stdout, ContainerID: "nope"})
	if err := stream.ReadReply(c); !errors.Is(err, stream.ErrRefused) {
		t.Fatalf("stream to an unknown process: %v", err)
	}
}

// A container without a PID namespace of its own: a process that
// outlives its init is killed when the container is removed, as `runc
// delete` does, and the container's cgroup and runc's state go with it.
func TestRemoveKillsLeftovers(t *testing.T) {
	a := startAgent(t)
	spec := a.spec
	var nss []specs.LinuxNamespace
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type != specs.PIDNamespace {
			nss = append(nss, ns)
		}
	}
	linux := *spec.Linux
	linux.Namespaces = nss
	spec.Linux = &linux
	p := *spec.Process
	p.Args = []string{"sleep", "1000"}
	spec.Process = &p
	b, err := json.Marshal(&spec)
	if err != nil {
		t.Fatal(err)
	}
	a.create("left", b, nil)
	a.start("left")
	a.exec("left", "bg", nil, false, "sleep", "1000")
	a.signal("left", "", unix.SIGKILL, false)
	if w := a.wait("left", "", 30*time.Second); w.ExitStatus != 137 {
		t.Fatalf("init exit %d, want 137", w.ExitStatus)
	}
	ctx := ctxT(t, 30*time.Second)
	bg := make(chan int32, 1)
	go func() {
		r, err := a.api.WaitProcess(ctx, &agentv1.WaitProcessRequest{ContainerId: "left", ExecId: "bg"})
		if err != nil {
			bg <- -1
			return
		}
		bg <- r.ExitStatus
	}()
	select {
	case st := <-bg:
		t.Fatalf("exec process ended with %d before the remove", st)
	case <-time.After(500 * time.Millisecond):
	}
	a.remove("left")
	select {
	case st := <-bg:
		if st != 137 {
			t.Errorf("exec process ended with %d, want 137 (SIGKILL)", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exec process not ended 10s after the remove")
	}
	a.removed("left")
}
