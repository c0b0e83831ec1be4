package container

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent/stdio"
)

func TestConsolePath(t *testing.T) {
	cid := strings.Repeat("a", 64)
	eid := "exec-" + strings.Repeat("b", 64)
	for _, state := range []string{"/run/stratovirt", "/tmp/" + strings.Repeat("x", 120)} {
		p := consolePath(state, cid, eid)
		if len(p) > maxSunPath {
			t.Errorf("state %s: path %q is %d bytes", state, p, len(p))
		}
		if len(state) < 50 && !strings.HasPrefix(p, state+"/tty/") {
			t.Errorf("state %s: path %q not under its tty dir", state, p)
		}
	}
	if consolePath("/run/stratovirt", cid, "init") == consolePath("/run/stratovirt", cid, eid) {
		t.Error("init and exec share a console path")
	}
	if p := consolePath("/run/stratovirt", cid, "init"); !regexp.MustCompile(`^/run/stratovirt/tty/[0-9a-f]{16}\.sock$`).MatchString(p) {
		t.Errorf("init console path %q: want /run/stratovirt/tty/<16 hex>.sock", p)
	}
}

func TestWriteFiles(t *testing.T) {
	big := make([]byte, MaxFileSize+1)
	many := make([]*agentv1.File, MaxFiles+1)
	for i := range many {
		many[i] = &agentv1.File{Name: "f" + string(rune('a'+i))}
	}
	tests := []struct {
		name  string
		files []*agentv1.File
		bad   bool
	}{
		{"hosts and hostname", []*agentv1.File{{Name: "hosts", Content: []byte("127.0.0.1 localhost\n")}, {Name: "hostname", Content: []byte("web\n"), Mode: 0o600}}, false},
		{"none", nil, false},
		{"dotdot", []*agentv1.File{{Name: "../x"}}, true},
		{"slash", []*agentv1.File{{Name: "a/b"}}, true},
		{"empty name", []*agentv1.File{{Name: ""}}, true},
		{"duplicate", []*agentv1.File{{Name: "a"}, {Name: "a"}}, true},
		{"too big", []*agentv1.File{{Name: "a", Content: big}}, true},
		{"too many", many, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "files")
			got, err := writeFiles(dir, tc.files)
			if tc.bad {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.files) {
				t.Fatalf("%d paths for %d files", len(got), len(tc.files))
			}
			for _, f := range tc.files {
				b, err := os.ReadFile(got[f.Name])
				if err != nil || string(b) != string(f.Content) {
					t.Errorf("%s: %q %v", f.Name, b, err)
				}
				st, _ := os.Stat(got[f.Name])
				want := os.FileMode(0o644)
				if f.Mode != 0 {
					want = os.FileMode(f.Mode)
				}
				if st.Mode().Perm() != want {
					t.Errorf("%s: mode %v, want %v", f.Name, st.Mode().Perm(), want)
				}
			}
		})
	}
}

func TestRewriteFileMounts(t *testing.T) {
	m := &Manager{cfg: Config{StateDir: "/run/sv"}}
	spec := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: "file:hosts"},
		{Destination: "/data", Type: "bind", Source: "volume:data"},
	}}
	if err := m.rewriteMounts(spec, map[string]string{"data": "/v/data"}, map[string]string{"hosts": "/c/files/hosts"}); err != nil {
		t.Fatal(err)
	}
	if spec.Mounts[0].Source != "/c/files/hosts" || spec.Mounts[1].Source != "/v/data" {
		t.Errorf("mounts %+v", spec.Mounts)
	}
	spec = &specs.Spec{Mounts: []specs.Mount{{Destination: "/etc/hosts", Type: "bind", Source: "file:missing"}}}
	if err := m.rewriteMounts(spec, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v", err)
	}
}

func TestJoinSandboxNamespaces(t *testing.T) {
	live := &Process{pid: 42, done: make(chan struct{})}
	dead := &Process{pid: 43, done: make(chan struct{})}
	close(dead.done)
	spec := func() *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace},
			{Type: specs.IPCNamespace, Path: SandboxNamespace},
			{Type: specs.UTSNamespace, Path: SandboxNamespace},
			{Type: specs.MountNamespace},
		}}}
	}
	tests := []struct {
		name string
		sid  string
		pod  *Process
		id   string
		want []string // namespace paths, in order
		err  error
	}{
		{"joins the pause", "pod", live, "app", []string{"", "/proc/42/ns/ipc", "/proc/42/ns/uts", ""}, nil},
		{"no sandbox", "", nil, "app", nil, ErrPrecondition},
		{"sandbox exited", "pod", dead, "app", nil, ErrPrecondition},
		{"the sandbox itself", "pod", live, "pod", nil, ErrPrecondition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &Manager{containers: map[string]*Container{}, sandboxID: tc.sid}
			if tc.pod != nil {
				m.containers[tc.sid] = &Container{id: tc.sid, init: tc.pod}
			}
			s := spec()
			err := m.joinSandboxNamespaces(tc.id, s)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range s.Linux.Namespaces {
				if n.Path != tc.want[i] {
					t.Errorf("%s: path %q, want %q", n.Type, n.Path, tc.want[i])
				}
			}
		})
	}
}

func TestDeleteExec(t *testing.T) {
	dir := t.TempDir()
	pio, err := stdio.New(stdio.Config{})
	if err != nil {
		t.Fatal(err)
	}
	running := &Process{id: "e1", pidfd: -1, io: pio, done: make(chan struct{})}
	c := &Container{id: "c", dir: dir, execs: map[string]*Process{"e1": running}}
	m := &Manager{containers: map[string]*Container{"c": c}}
	for _, f := range []string{"exec-e1.json", "exec-e1.pid"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.DeleteExec("c", "e1"); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("running exec: %v", err)
	}
	close(running.done)
	if err := m.DeleteExec("c", "e1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.execs["e1"]; ok {
		t.Error("exec still listed")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("state files left: %v", ents)
	}
	if err := m.DeleteExec("c", "e1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if err := m.DeleteExec("c", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("init: %v", err)
	}
}

func TestOwnPIDNamespace(t *testing.T) {
	for _, tc := range []struct {
		name string
		nss  []specs.LinuxNamespace
		want bool
	}{
		{"new", []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}}, true},
		{"joined", []specs.LinuxNamespace{{Type: specs.PIDNamespace, Path: "/proc/7/ns/pid"}}, false},
		{"none", []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.IPCNamespace}}, false},
		{"empty", nil, false},
	} {
		if got := ownPIDNamespace(tc.nss); got != tc.want {
			t.Errorf("%s: ownPIDNamespace = %v, want %v", tc.name, got, tc.want)
		}
	}
}
