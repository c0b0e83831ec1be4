package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
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

// holderSpec is a pod sandbox's spec as the shim sends it: new PID, IPC
// and UTS namespaces, a hostname, an IPC sysctl, pause's oom_score_adj
// and CPU shares.
func (a *agent) holderSpec() specs.Spec {
	s := a.spec
	p := *s.Process
	p.Args, p.Terminal = []string{"/pause"}, false
	adj := -998
	p.OOMScoreAdj = &adj
	s.Process = &p
	s.Hostname = "pod-host"
	linux := *s.Linux
	linux.Namespaces = []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace}}
	linux.Sysctl = map[string]string{"kernel.shm_rmid_forced": "1"}
	shares := uint64(2)
	linux.Resources = &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares}}
	s.Linux = &linux
	return s
}

func (a *agent) createHolder(id string, s specs.Spec) error {
	b, err := json.Marshal(&s)
	if err != nil {
		a.t.Fatal(err)
	}
	_, err = a.api.CreateContainer(ctxT(a.t, 30*time.Second), &agentv1.CreateContainerRequest{ContainerId: id, OciSpec: b, SandboxHolder: true})
	return err
}

// The agent holds a pod's sandbox itself: a container joining its
// namespaces sees its hostname and sysctl and, sharing its PID
// namespace, the holder as PID 1, which reaps the pod's orphans. The
// sandbox answers pids, stats, pause and resume; it refuses exec; its
// removal kills what shares its PID namespace and leaves no cgroup.
func TestSandboxHolder(t *testing.T) {
	a := startAgent(t)
	if _, err := a.api.CreateSandbox(ctxT(t, 10*time.Second), &agentv1.CreateSandboxRequest{SandboxId: "sb"}); err != nil {
		t.Fatal(err)
	}
	if err := a.createHolder("sb", a.holderSpec()); err != nil {
		t.Fatal("create the holder:", err)
	}
	a.start("sb")
	pids, err := a.api.ListProcesses(ctxT(t, 10*time.Second), &agentv1.ListProcessesRequest{ContainerId: "sb"})
	if err != nil || len(pids.Pids) != 1 {
		t.Fatalf("sandbox pids: %v, %v", pids, err)
	}
	holder := int(pids.Pids[0])
	if b, _ := os.ReadFile("/proc/" + strconv.Itoa(holder) + "/oom_score_adj"); strings.TrimSpace(string(b)) != "-998" {
		t.Errorf("holder oom_score_adj %q", b)
	}
	if cgroupV2Memory() {
		if b, err := os.ReadFile(filepath.Join(cgroupRoot, "stratovirt", "sb", "cpu.weight")); err != nil || strings.TrimSpace(string(b)) != "1" {
			t.Errorf("holder cpu.weight %q, %v; want 1 (2 shares)", b, err)
		}
		if st, err := a.api.StatsContainer(ctxT(t, 10*time.Second), &agentv1.StatsContainerRequest{ContainerId: "sb"}); err != nil || st.Pids.Current < 1 || st.Memory.UsageBytes == 0 {
			t.Errorf("sandbox stats: %v %v, %v", st.GetPids(), st.GetMemory(), err)
		}
	}

	var app specs.Spec
	json.Unmarshal(a.specFor("sh", "-c", "hostname; cat /proc/sys/kernel/shm_rmid_forced; tr '\\0' ' ' < /proc/1/cmdline; echo; sleep 100 >/dev/null & echo $!"), &app)
	app.Hostname = "" // CRI names the hostname in the sandbox only
	linux := *app.Linux
	linux.Namespaces = []specs.LinuxNamespace{{Type: specs.PIDNamespace, Path: "sandbox:"}, {Type: specs.IPCNamespace, Path: "sandbox:"},
		{Type: specs.UTSNamespace, Path: "sandbox:"}, {Type: specs.MountNamespace}}
	app.Linux = &linux
	b, _ := json.Marshal(&app)
	a.create("app", b, &agentv1.Stdio{Stdout: true})
	out := collect(a.dial(stream.Stdout, "app", ""), true)
	a.start("app")
	if w := a.wait("app", "", 30*time.Second); w.ExitStatus != 0 {
		t.Fatalf("app exit %d", w.ExitStatus)
	}
	lines := strings.Split(strings.TrimSpace(out.wait(t, 5*time.Second)), "\n")
	if len(lines) != 4 || lines[0] != "pod-host" || lines[1] != "1" || !strings.HasPrefix(lines[2], "stratovirt-sandbox sandbox-holder") {
		t.Fatalf("app saw %q; want the pod's hostname, its sysctl and the holder as PID 1", lines)
	}
	a.remove("app")

	// The app's `sleep` was orphaned to the holder, PID 1 of the pod's
	// PID namespace; the app's removal killed it, and the holder reaps it.
	children := "/proc/" + strconv.Itoa(holder) + "/task/" + strconv.Itoa(holder) + "/children"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(children)
		if err == nil && strings.TrimSpace(string(b)) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("holder's children %q (%v): an orphan not reaped", b, err)
		}
	}
	ctx := ctxT(t, 10*time.Second)
	if _, err := a.api.ExecProcess(ctx, &agentv1.ExecProcessRequest{ContainerId: "sb", ExecId: "e", Process: mustJSON(t, a.spec.Process)}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("exec in the sandbox: %v, want FailedPrecondition", err)
	}
	for _, freeze := range []bool{true, false} {
		var err error
		if freeze {
			_, err = a.api.PauseContainer(ctx, &agentv1.PauseContainerRequest{ContainerId: "sb"})
		} else {
			_, err = a.api.ResumeContainer(ctx, &agentv1.ResumeContainerRequest{ContainerId: "sb"})
		}
		if cgroupV2Memory() && err != nil {
			t.Errorf("freeze %v: %v", freeze, err)
		}
		if cgroupV2Memory() {
			b, _ := os.ReadFile(filepath.Join(cgroupRoot, "stratovirt", "sb", "cgroup.events"))
			if want := map[bool]string{true: "frozen 1", false: "frozen 0"}[freeze]; !strings.Contains(string(b), want) {
				t.Errorf("after freeze %v the sandbox's cgroup.events is %q", freeze, b)
			}
		}
	}
	a.remove("sb")
	a.removed("sb")
	if err := unix.Kill(holder, 0); err != unix.ESRCH {
		t.Errorf("holder pid %d after the sandbox's removal: %v", holder, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A sandbox the holder cannot give is refused before anything runs, and
// leaves no cgroup behind.
func TestSandboxHolderErrors(t *testing.T) {
	a := startAgent(t)
	hostPID := a.holderSpec()
	hostPID.Linux = &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.IPCNamespace}}, Sysctl: map[string]string{"kernel.shm_rmid_forced": "1"}}
	hostPID.Hostname = ""
	notNamespaced := a.holderSpec()
	notNamespaced.Linux.Sysctl = map[string]string{"kernel.pid_max": "100000"}
	hostnameNoUTS := a.holderSpec()
	hostnameNoUTS.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.PIDNamespace}}
	userNS := a.holderSpec()
	userNS.Linux.Namespaces = append(userNS.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	badValue := a.holderSpec()
	badValue.Linux.Sysctl = map[string]string{"kernel.shmmax": "not a number"}
	for name, s := range map[string]specs.Spec{
		"sysctl not namespaced": notNamespaced, "hostname without UTS": hostnameNoUTS,
		"user namespace": userNS, "value the kernel refuses": badValue,
	} {
		if err := a.createHolder("bad", s); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
		a.removed("bad")
	}
	// Host PID namespace: the holder is no PID 1, and works.
	if err := a.createHolder("hp", hostPID); err != nil {
		t.Fatal("holder in the agent's PID namespace:", err)
	}
	a.remove("hp")
	a.removed("hp")
	b, _ := json.Marshal(a.holderSpec())
	if _, err := a.api.CreateContainer(ctxT(t, 10*time.Second), &agentv1.CreateContainerRequest{ContainerId: "r", OciSpec: b, SandboxHolder: true,
		Rootfs: &agentv1.Storage{Source: a.rootfs, Fstype: "bind"}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a holder with a rootfs: %v, want InvalidArgument", err)
	}
}
