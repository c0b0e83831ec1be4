package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCrashToLog runs this test binary as a "shim" that panics after
// crashToLog and checks that the trace arrives on the log FIFO.
func TestCrashToLog(t *testing.T) {
	if dir := os.Getenv("CRASH_TO_LOG_DIR"); dir != "" {
		if err := crashToLog(dir); err != nil {
			t.Fatal(err)
		}
		panic("shim crash for the test")
	}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "log")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The reader end, as containerd holds it.
	r, err := os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := unix.SetNonblock(int(r.Fd()), false); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashToLog$")
	cmd.Env = append(os.Environ(), "CRASH_TO_LOG_DIR="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("the crashing child exited 0")
	}
	// The child is gone: its writer end is closed, so the read ends.
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "panic: shim crash for the test") || !strings.Contains(string(got), "goroutine ") {
		t.Fatalf("log FIFO got %q; child stderr %q", got, stderr.String())
	}
}

func TestCrashToLogNoFIFO(t *testing.T) {
	if err := crashToLog(t.TempDir()); err == nil {
		t.Fatal("want an error without a log FIFO")
	}
}
