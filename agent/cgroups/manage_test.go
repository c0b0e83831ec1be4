package cgroups

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestParsePopulated(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    bool
		wantErr bool
	}{
		{"populated 1\nfrozen 0\n", true, false},
		{"populated 0\nfrozen 0\n", false, false},
		{"frozen 0\npopulated 0", false, false},
		{"  populated   1  \n", true, false},
		{"frozen 1\n", false, true},
		{"populated 2\n", false, true},
		{"", false, true},
	} {
		got, err := ParseEventsKey([]byte(tc.in), "populated")
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ParseEventsKey(%q, populated) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// A cgroup tree is removed deepest first; a missing one is no error; a
// directory that is not empty (here: a regular file in it, which cgroupfs
// never has) is an error naming it.
func TestRemove(t *testing.T) {
	root := t.TempDir()
	cg := filepath.Join(root, "pod", "ctr")
	for _, d := range []string{"a/b/c", "a/d", "e"} {
		if err := os.MkdirAll(filepath.Join(cg, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := Remove(cg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Fatalf("cgroup dir still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "pod")); err != nil {
		t.Fatalf("parent removed: %v", err)
	}
	if err := Remove(cg); err != nil {
		t.Fatalf("missing cgroup: %v", err)
	}
	bad := filepath.Join(root, "bad")
	os.MkdirAll(filepath.Join(bad, "x"), 0o755)
	os.WriteFile(filepath.Join(bad, "x", "f"), nil, 0o644)
	if err := Remove(bad); err == nil || !strings.Contains(err.Error(), filepath.Join(bad, "x")) {
		t.Fatalf("removeCgroup of a dir with a file: %v", err)
	}
}

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }

// Apply writes what runc's cgroup v2 driver writes for the same
// resources, and refuses what it cannot set rather than dropping it.
func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		r       specs.LinuxResources
		want    map[string]string
		wantErr bool
	}{
		{"sandbox default", specs.LinuxResources{
			Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			CPU:     &specs.LinuxCPU{Shares: u64(2)},
		}, map[string]string{"cpu.weight": "1"}, false},
		{"cpu", specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(1024), Quota: i64(50000), Period: u64(100000)}},
			map[string]string{"cpu.weight": "39", "cpu.max": "50000 100000"}, false},
		{"cpu quota unlimited", specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(-1)}},
			map[string]string{"cpu.max": "max 100000"}, false},
		{"memory and pids", specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Reservation: i64(32 << 20), Swap: i64(96 << 20)},
			Pids:   &specs.LinuxPids{Limit: i64(-1)},
		}, map[string]string{"memory.max": "67108864", "memory.low": "33554432", "memory.swap.max": "33554432", "pids.max": "max"}, false},
		{"unified", specs.LinuxResources{Unified: map[string]string{"memory.high": "1000000"}},
			map[string]string{"memory.high": "1000000"}, false},
		{"unified escapes", specs.LinuxResources{Unified: map[string]string{"../x": "1"}}, nil, true},
		{"unified cgroup file", specs.LinuxResources{Unified: map[string]string{"cgroup.procs": "1"}}, nil, true},
		{"device allowed", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}, nil, true},
		{"block io", specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{}}, nil, true},
		{"cpuset", specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0"}}, nil, true},
		{"swap below limit", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(1 << 20)}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := Apply(dir, &tc.r)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Apply: %v, want error %v", err, tc.wantErr)
			}
			entries, _ := os.ReadDir(dir)
			if tc.wantErr {
				if len(entries) != 0 {
					t.Errorf("refused resources wrote %d files", len(entries))
				}
				return
			}
			if len(entries) != len(tc.want) {
				t.Errorf("wrote %d files, want %d", len(entries), len(tc.want))
			}
			for name, v := range tc.want {
				b, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil || string(b) != v {
					t.Errorf("%s = %q (%v), want %q", name, b, err, v)
				}
			}
		})
	}
}

func TestCPUWeight(t *testing.T) {
	for shares, want := range map[uint64]uint64{0: 1, 2: 1, 1024: 39, 262144: 10000, 1 << 30: 10000} {
		if got := cpuWeight(shares); got != want {
			t.Errorf("cpuWeight(%d) = %d, want %d", shares, got, want)
		}
	}
}

// Make enables at each level what that level has and creates the path.
func TestMake(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "cgroup.controllers"), "cpu memory pids\n")
	write(filepath.Join(root, "cgroup.subtree_control"), "memory\n")
	// The middle level exists, with everything enabled already.
	mid := filepath.Join(root, "pods")
	os.Mkdir(mid, 0o755)
	write(filepath.Join(mid, "cgroup.controllers"), "cpu memory\n")
	write(filepath.Join(mid, "cgroup.subtree_control"), "cpu memory\n")
	dir := filepath.Join(mid, "sb")
	if err := Make(root, dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("%s not made: %v", dir, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "cgroup.subtree_control")); string(b) != "+cpu +pids" {
		t.Errorf("root subtree_control written %q, want %q", b, "+cpu +pids")
	}
	if b, _ := os.ReadFile(filepath.Join(mid, "cgroup.subtree_control")); string(b) != "cpu memory\n" {
		t.Errorf("a level with everything enabled was rewritten: %q", b)
	}
	for _, bad := range []string{root, filepath.Dir(root), filepath.Join(root, "..", "x")} {
		if err := Make(root, bad); err == nil {
			t.Errorf("Make(%s) outside the root: no error", bad)
		}
	}
}

// Freeze writes cgroup.freeze and returns once cgroup.events agrees.
func TestFreeze(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cgroup.events"), []byte("populated 1\nfrozen 1\n"), 0o644)
	if err := Freeze(context.Background(), dir, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "cgroup.freeze")); string(b) != "1" {
		t.Errorf("cgroup.freeze = %q", b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Freeze(ctx, dir, false); err == nil {
		t.Error("a thaw the kernel never reports: no error")
	}
}
