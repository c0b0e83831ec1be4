package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestValidateDrives(t *testing.T) {
	kernel := tempFile(t, "vmlinux.bin")
	disk := tempFile(t, "disk.img")
	ro := tempFile(t, "ro.img")
	if err := os.Chmod(ro, 0o444); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base := tempFile(t, "base.img")
	overlay := tempFile(t, "overlay.img")
	bigBase := filepath.Join(dir, "big.img")
	if err := os.WriteFile(bigBase, []byte("xy"), 0o644); err != nil {
		t.Fatal(err)
	}
	drives := func(n int) []Drive {
		var ds []Drive
		for i := 0; i < n; i++ {
			ds = append(ds, DefaultDrive(fmt.Sprintf("d%d", i), disk))
		}
		return ds
	}
	threads := func(n int) []IOThread {
		var ts []IOThread
		for i := 0; i < n; i++ {
			ts = append(ts, IOThread{ID: fmt.Sprintf("iothread%d", i)})
		}
		return ts
	}
	tests := []struct {
		name    string
		mod     func(c *VMConfig)
		wantErr string
	}{
		{"no drives", func(c *VMConfig) {}, ""},
		{"one drive all options", func(c *VMConfig) {
			c.IOThreads = threads(1)
			c.Drives = []Drive{{ID: "rootfs", File: disk, Serial: strings.Repeat("s", 20), IOThread: "iothread0", IOPS: 1000000}}
		}, ""},
		{"six drives", func(c *VMConfig) { c.Drives = drives(6) }, ""},
		{"seven drives", func(c *VMConfig) { c.Drives = drives(7) }, "-drive: disk number 7 out of range [0, 6]"},
		{"eight iothreads", func(c *VMConfig) { c.IOThreads = threads(8) }, ""},
		{"nine iothreads", func(c *VMConfig) { c.IOThreads = threads(9) }, "-iothread: iothread number 9 out of range [0, 8]"},
		{"dup iothread", func(c *VMConfig) { c.IOThreads = []IOThread{{"a"}, {"a"}} }, `-iothread: id "a" is given more than once`},
		{"empty iothread", func(c *VMConfig) { c.IOThreads = []IOThread{{""}} }, "-iothread: id is required"},
		{"iops over", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: disk, IOPS: 1000001}} }, `-drive: drive "a": iops 1000001 out of range [0, 1000000]`},
		{"serial 21", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: disk, Serial: strings.Repeat("s", 21)}} },
			`-drive: drive "a": serial length 21 out of range [0, 20]`},
		{"dup id", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: disk}, {ID: "a", File: disk}} }, `-drive: id "a" is given more than once`},
		{"missing id", func(c *VMConfig) { c.Drives = []Drive{{File: disk}} }, "-drive: 'id' is missing"},
		{"missing file", func(c *VMConfig) { c.Drives = []Drive{{ID: "a"}} }, `-drive: drive "a": 'file' is missing`},
		{"unknown iothread", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: disk, IOThread: "x"}} },
			`-drive: drive "a": iothread "x" is not configured (add -iothread id=x)`},
		{"file absent", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: filepath.Join(dir, "nope")}} },
			fmt.Sprintf(`-drive: drive "a": file %q: no such file or directory`, filepath.Join(dir, "nope"))},
		{"directory", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: dir}} },
			fmt.Sprintf(`-drive: drive "a": file %q is neither a regular file nor a block device`, dir)},
		{"char device", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: "/dev/null"}} },
			`-drive: drive "a": file "/dev/null" is neither a regular file nor a block device`},
		{"readonly file readonly drive", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: ro, ReadOnly: true}} }, ""},
		{"backing", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: overlay, Backing: base}} }, ""},
		{"backing readonly", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: overlay, Backing: base, ReadOnly: true}} },
			`-drive: drive "a": a backing image needs a writable, buffered drive (readonly=off, direct=off)`},
		{"backing direct", func(c *VMConfig) {
			d := DefaultDrive("a", overlay)
			d.Backing = base
			c.Drives = []Drive{d}
		}, `-drive: drive "a": a backing image needs a writable, buffered drive (readonly=off, direct=off)`},
		{"backing absent", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: overlay, Backing: filepath.Join(dir, "nope")}} },
			fmt.Sprintf(`-drive: drive "a": backing image %q: no such file or directory`, filepath.Join(dir, "nope"))},
		{"backing directory", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: overlay, Backing: dir}} },
			fmt.Sprintf(`-drive: drive "a": backing image %q is not a regular file`, dir)},
		{"backing size differs", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: overlay, Backing: bigBase}} },
			fmt.Sprintf(`-drive: drive "a": file %q is 1 bytes, backing image %q is 2 bytes: they must be the same size`, overlay, bigBase)},
		{"backing under a device", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: "/dev/null", Backing: base}} },
			`-drive: drive "a": file "/dev/null" is neither a regular file nor a block device` + "\n" +
				fmt.Sprintf(`-drive: drive "a": file "/dev/null" is not a regular file, so it cannot overlay backing image %q`, base)},
	}
	if os.Geteuid() != 0 {
		tests = append(tests, struct {
			name    string
			mod     func(c *VMConfig)
			wantErr string
		}{"readonly file writable drive", func(c *VMConfig) { c.Drives = []Drive{{ID: "a", File: ro}} },
			fmt.Sprintf(`-drive: drive "a": file %q is not readable and writable`, ro)})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Boot.Kernel = kernel
			tc.mod(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestDriveJSON(t *testing.T) {
	const seed = `{"drive": [{"drive_id": "rootfs", "path_on_host": "/path/to/rootfs", "serial_num": "11111111",
		"read_only": false, "iops": 200000, "iothread": "iothread2"}, {"drive_id": "d", "path_on_host": "/d", "direct": false}],
		"iothread": [{"id": "iothread1"}, {"id": "iothread2"}]}`
	var c VMConfig
	dec := json.NewDecoder(strings.NewReader(seed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	want := []Drive{
		{ID: "rootfs", File: "/path/to/rootfs", Serial: "11111111", Direct: true, IOPS: 200000, IOThread: "iothread2"},
		{ID: "d", File: "/d"},
	}
	if !reflect.DeepEqual(c.Drives, want) {
		t.Errorf("drives %+v\nwant   %+v", c.Drives, want)
	}
	if !reflect.DeepEqual(c.IOThreads, []IOThread{{"iothread1"}, {"iothread2"}}) {
		t.Errorf("iothreads %+v", c.IOThreads)
	}
	// Backing is Go API only: JSON neither shows nor sets it.
	b, err := json.Marshal(Drive{ID: "a", File: "/a", Backing: "/base"})
	if err != nil || strings.Contains(string(b), "/base") {
		t.Errorf("marshalled drive %s (%v) shows the backing image", b, err)
	}
	var d Drive
	if err := json.Unmarshal([]byte(`{"drive_id": "a", "path_on_host": "/a", "Backing": "/b", "backing": "/b"}`), &d); err != nil || d.Backing != "" {
		t.Errorf("JSON set Backing: %+v (%v)", d, err)
	}
}
