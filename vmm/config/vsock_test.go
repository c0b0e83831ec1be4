package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateVsock(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "exists.sock")
	os.WriteFile(existing, nil, 0o600)
	for _, tc := range []struct {
		name string
		v    Vsock
		err  string
	}{
		{"ok", Vsock{ID: "v", GuestCID: 3}, ""},
		{"max cid", Vsock{ID: "v", GuestCID: 1<<32 - 2}, ""},
		{"cid 2", Vsock{ID: "v", GuestCID: 2}, "-device: vsock guest-cid 2 out of range: must be >= 3 and < 4294967295"},
		{"cid any", Vsock{ID: "v", GuestCID: 1<<32 - 1}, "out of range"},
		{"no id", Vsock{GuestCID: 3}, "'id' is missing"},
		{"bad backend", Vsock{ID: "v", GuestCID: 3, Backend: "virtio"}, `backend "virtio" is not supported`},
		{"unix without path", Vsock{ID: "v", GuestCID: 3, Backend: "unix"}, "needs uds-path"},
		{"vhost with path", Vsock{ID: "v", GuestCID: 3, Backend: "vhost", UDSPath: filepath.Join(dir, "a")}, "only for backend unix"},
		{"unix ok", Vsock{ID: "v", GuestCID: 3, Backend: "unix", UDSPath: filepath.Join(dir, "v.sock")}, ""},
		{"socket exists", Vsock{ID: "v", GuestCID: 3, Backend: "unix", UDSPath: existing}, "already exists"},
		{"path too long", Vsock{ID: "v", GuestCID: 3, UDSPath: "/" + strings.Repeat("a", 100)}, "out of range [1, 96]"},
	} {
		var errs []error
		c := VMConfig{Vsock: &tc.v}
		errs = c.validateVsock()
		err := errors.Join(errs...)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestBalloonHugePages(t *testing.T) {
	c := VMConfig{Balloon: &Balloon{}, Machine: Machine{MemPath: t.TempDir()}}
	if errs := c.validateBalloon(); len(errs) != 0 {
		t.Errorf("balloon with a non-hugetlbfs mem-path: %v", errs)
	}
	const huge = "/dev/hugepages"
	if _, isHuge, err := PageSizeAt(huge); err != nil || !isHuge {
		t.Skipf("%s is not a hugetlbfs mount", huge)
	}
	c.Machine.MemPath = huge
	if errs := c.validateBalloon(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "cannot be used with huge pages") {
		t.Errorf("balloon with hugetlbfs: %v", errs)
	}
}
