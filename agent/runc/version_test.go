package runc

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratovirt-go/stratovirt/agent/reaper"
)

// TestVersion: the recorded line when the image has one, else runc is
// asked (a stand-in script here).
func TestVersion(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "runc")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'runc version 9.9.9'\necho 'commit: x'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	recorded := filepath.Join(dir, "runc-version")
	if err := os.WriteFile(recorded, []byte("runc version 1.1.5+ds1\ncommit: y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rp, err := reaper.New()
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	for _, tc := range []struct {
		name, file, want string
	}{
		{"recorded", recorded, "runc version 1.1.5+ds1"},
		{"missing file", filepath.Join(dir, "none"), "runc version 9.9.9"},
		{"no file", "", "runc version 9.9.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Runc{Binary: bin, Root: dir, Reaper: rp, VersionFile: tc.file}
			got, err := r.Version(context.Background())
			if err != nil || got != tc.want {
				t.Fatalf("Version = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
