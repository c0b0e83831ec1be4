package runc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/agent/reaper"
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
		got, err := parsePopulated([]byte(tc.in))
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("parsePopulated(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// A cgroup tree is removed deepest first; a missing one is no error; a
// directory that is not empty (here: a regular file in it, which cgroupfs
// never has) is an error naming it.
func TestRemoveCgroup(t *testing.T) {
	root := t.TempDir()
	cg := filepath.Join(root, "pod", "ctr")
	for _, d := range []string{"a/b/c", "a/d", "e"} {
		if err := os.MkdirAll(filepath.Join(cg, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeCgroup(cg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Fatalf("cgroup dir still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "pod")); err != nil {
		t.Fatalf("parent removed: %v", err)
	}
	if err := removeCgroup(cg); err != nil {
		t.Fatalf("missing cgroup: %v", err)
	}
	bad := filepath.Join(root, "bad")
	os.MkdirAll(filepath.Join(bad, "x"), 0o755)
	os.WriteFile(filepath.Join(bad, "x", "f"), nil, 0o644)
	if err := removeCgroup(bad); err == nil || !strings.Contains(err.Error(), filepath.Join(bad, "x")) {
		t.Fatalf("removeCgroup of a dir with a file: %v", err)
	}
}

// fakeRunc is a runc that records its arguments in <root>/args.
func fakeRunc(t *testing.T) (*Runc, string) {
	t.Helper()
	root := t.TempDir()
	bin := filepath.Join(root, "runc")
	script := "#!/bin/sh\necho \"$@\" > " + filepath.Join(root, "args") + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	rp, err := reaper.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close() })
	return &Runc{Binary: bin, Root: root, Reaper: rp}, filepath.Join(root, "args")
}

func ranRunc(t *testing.T, args string) string {
	t.Helper()
	b, err := os.ReadFile(args)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(args)
	return strings.TrimSpace(string(b))
}

func TestDeleteStopped(t *testing.T) {
	ctx := context.Background()
	r, args := fakeRunc(t)
	state := func(id string) string {
		d := filepath.Join(r.Root, id)
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "state.json"), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}

	// Stopped, own PID namespace: cgroup and state go, runc does not run.
	dir := state("c1")
	cg := filepath.Join(t.TempDir(), "c1")
	os.MkdirAll(filepath.Join(cg, "sub"), 0o755)
	if err := r.DeleteStopped(ctx, "c1", Stopped{CgroupDir: cg}, false); err != nil {
		t.Fatal(err)
	}
	if got := ranRunc(t, args); got != "" {
		t.Errorf("runc ran: %q", got)
	}
	for _, p := range []string{dir, cg} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", p, err)
		}
	}

	// Poststop hooks, or no runc state: runc delete does it.
	dir = state("c2")
	if err := r.DeleteStopped(ctx, "c2", Stopped{}, true); err != nil {
		t.Fatal(err)
	}
	if got := ranRunc(t, args); !strings.HasSuffix(got, "delete c2") {
		t.Errorf("with hooks runc ran %q, want a delete of c2", got)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("state removed without runc: %v", err)
	}
	if err := r.DeleteStopped(ctx, "c3", Stopped{}, false); err != nil {
		t.Fatal(err)
	}
	if got := ranRunc(t, args); !strings.HasSuffix(got, "delete c3") {
		t.Errorf("without state runc ran %q, want a delete of c3", got)
	}

	// Shared PID namespace on a kernel without cgroup.kill: runc delete.
	state("c4")
	cg = filepath.Join(t.TempDir(), "c4")
	os.MkdirAll(cg, 0o755)
	if err := r.DeleteStopped(ctx, "c4", Stopped{CgroupDir: cg, SharedPIDs: true}, false); err != nil {
		t.Fatal(err)
	}
	if got := ranRunc(t, args); !strings.HasSuffix(got, "delete c4") {
		t.Errorf("without cgroup.kill runc ran %q, want a delete of c4", got)
	}
	// Its cgroup already gone: nothing to kill, state removed.
	dir = state("c5")
	if err := r.DeleteStopped(ctx, "c5", Stopped{CgroupDir: filepath.Join(t.TempDir(), "gone"), SharedPIDs: true}, false); err != nil {
		t.Fatal(err)
	}
	if got := ranRunc(t, args); got != "" {
		t.Errorf("runc ran: %q", got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left: %v", dir, err)
	}
}
