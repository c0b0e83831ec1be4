package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartCPUProfile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name            string
		path            string
		seccompDisabled bool
		wantErr         string
		wantFile        bool
	}{
		{name: "off", path: "", seccompDisabled: false},
		{name: "needs seccomp off", path: filepath.Join(dir, "a.pprof"), wantErr: "needs -disable-seccomp"},
		{name: "bad path", path: filepath.Join(dir, "no", "such", "dir"), seccompDisabled: true, wantErr: envCPUProfile},
		{name: "written", path: filepath.Join(dir, "b.pprof"), seccompDisabled: true, wantFile: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stop, err := startCPUProfile(tc.path, tc.seccompDisabled)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			stop()
			if !tc.wantFile {
				return
			}
			st, err := os.Stat(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() == 0 {
				t.Fatal("profile is empty")
			}
		})
	}
}
