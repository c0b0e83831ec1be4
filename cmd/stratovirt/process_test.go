package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWritePidFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vm.pid")
	if err := writePidFile(p, 4242); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "4242\n" {
		t.Fatalf("pid file %q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// An existing file is never overwritten.
	if err := writePidFile(p, 1); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second write: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "4242\n" {
		t.Errorf("pid file overwritten: %q", b)
	}
	// No temporary files are left behind.
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries", len(ents))
	}
	if err := writePidFile(filepath.Join(dir, "missing", "vm.pid"), 1); err == nil {
		t.Error("pid file in a missing directory")
	}
}
