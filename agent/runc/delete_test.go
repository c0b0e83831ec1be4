package runc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/agent/reaper"
)

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
