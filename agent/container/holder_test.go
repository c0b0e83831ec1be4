package container

import (
	"errors"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestHolderPlan(t *testing.T) {
	ns := func(types ...specs.LinuxNamespaceType) []specs.LinuxNamespace {
		var out []specs.LinuxNamespace
		for _, typ := range types {
			out = append(out, specs.LinuxNamespace{Type: typ})
		}
		return out
	}
	pod := ns(specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.NetworkNamespace)
	adj := -998
	for _, tc := range []struct {
		name      string
		spec      specs.Spec
		flags     uintptr
		sysctls   map[string]string
		wantError bool
	}{
		{"CRI sandbox", specs.Spec{Hostname: "pod", Process: &specs.Process{OOMScoreAdj: &adj}, Linux: &specs.Linux{Namespaces: pod,
			Sysctl: map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ping_group_range": "0 2147483647", "fs.mqueue.msg_max": "20"}}},
			unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
			map[string]string{"/proc/sys/kernel/shm_rmid_forced": "1", "/proc/sys/net/ipv4/ping_group_range": "0 2147483647", "/proc/sys/fs/mqueue/msg_max": "20"}, false},
		{"host PID and IPC", specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: ns(specs.UTSNamespace)}}, unix.CLONE_NEWUTS, nil, false},
		{"no linux", specs.Spec{Process: &specs.Process{}}, 0, nil, false},
		{"terminal", specs.Spec{Process: &specs.Process{Terminal: true}}, 0, nil, true},
		{"joins a namespace", specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"}}}}, 0, nil, true},
		{"user namespace", specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: ns(specs.UserNamespace)}}, 0, nil, true},
		{"hostname without UTS", specs.Spec{Hostname: "x", Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: ns(specs.PIDNamespace)}}, 0, nil, true},
		{"hostname with a newline", specs.Spec{Hostname: "x\ny", Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: pod}}, 0, nil, true},
		{"IPC sysctl without IPC", specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: ns(specs.UTSNamespace), Sysctl: map[string]string{"kernel.shmmax": "1"}}}, 0, nil, true},
		{"machine-wide sysctl", specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: pod, Sysctl: map[string]string{"kernel.pid_max": "1"}}}, 0, nil, true},
		{"sysctl escaping", specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: pod, Sysctl: map[string]string{"net/../../x": "1"}}}, 0, nil, true},
		{"sysctl value newline", specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Namespaces: pod, Sysctl: map[string]string{"kernel.shmmax": "1\n2"}}}, 0, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags, cfg, err := holderPlan(&tc.spec)
			if tc.wantError {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if flags != tc.flags {
				t.Errorf("flags %#x, want %#x", flags, tc.flags)
			}
			if len(cfg.Sysctls) != len(tc.sysctls) {
				t.Errorf("sysctls %v, want %v", cfg.Sysctls, tc.sysctls)
			}
			for k, v := range tc.sysctls {
				if cfg.Sysctls[k] != v {
					t.Errorf("sysctl %s = %q, want %q", k, cfg.Sysctls[k], v)
				}
			}
			if cfg.Hostname != tc.spec.Hostname || cfg.OOMScoreAdj != tc.spec.Process.OOMScoreAdj {
				t.Errorf("hostname %q, oom_score_adj %v", cfg.Hostname, cfg.OOMScoreAdj)
			}
		})
	}
}
