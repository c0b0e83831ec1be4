package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

func TestMemoryOptions(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 8<<20); err != nil {
		t.Fatal(err)
	}
	const total = 4 << 20
	tests := []struct {
		name    string
		m       config.Machine
		wantFD  bool
		wantErr string
		after   func(t *testing.T)
	}{
		{"anonymous private", config.Machine{DumpGuestCore: true}, false, "", nil},
		{"memfd when shared without path", config.Machine{MemShare: true}, true, "", nil},
		{"directory: unlinked temp file", config.Machine{MemPath: dir}, true, "", func(t *testing.T) {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "stratovirt_backmem_") {
					t.Errorf("backing file %s left in the directory", e.Name())
				}
			}
		}},
		{"new file is created and unlinked", config.Machine{MemPath: filepath.Join(dir, "new")}, true, "", func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
				t.Errorf("created file left behind: %v", err)
			}
		}},
		{"existing big file is kept", config.Machine{MemPath: big}, true, "", func(t *testing.T) {
			if fi, err := os.Stat(big); err != nil || fi.Size() != 8<<20 {
				t.Errorf("existing file changed: %v %v", fi, err)
			}
		}},
		{"existing small file", config.Machine{MemPath: small}, false, "has 1 bytes, guest memory needs 4194304", nil},
		{"missing directory", config.Machine{MemPath: "/nonexistent-dir/ram"}, false, "statfs", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := memoryOptions(tc.m, total)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ~%q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.UseFD != tc.wantFD || opts.DumpGuestCore != tc.m.DumpGuestCore {
				t.Fatalf("opts %+v", opts)
			}
			if !opts.UseFD && !opts.HugePages {
				t.Error("anonymous guest RAM not advised for transparent huge pages")
			}
			if opts.UseFD {
				defer unix.Close(opts.FD)
				var st unix.Stat_t
				if err := unix.Fstat(opts.FD, &st); err != nil || st.Size < total {
					t.Errorf("backing fd size %d, %v", st.Size, err)
				}
				if !opts.Shared {
					t.Error("file-backed memory not shared")
				}
			}
			if tc.after != nil {
				tc.after(t)
			}
		})
	}
}
