package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateProcess(t *testing.T) {
	kernel := tempFile(t, "vmlinux.bin")
	existing := tempFile(t, "exists")
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	notDir := filepath.Join(existing, "qmp.sock")
	long := "/" + strings.Repeat("a", MaxPathLen)

	tests := []struct {
		name    string
		mod     func(c *VMConfig)
		wantErr string // exact; "" means valid
	}{
		{"none", func(c *VMConfig) {}, ""},
		{"api-channel new", func(c *VMConfig) { c.Process.APIChannel = sock }, ""},
		{"api-channel exists", func(c *VMConfig) { c.Process.APIChannel = existing },
			`-api-channel: api-channel socket "` + existing + `" already exists (remove it first)`},
		{"api-channel no dir", func(c *VMConfig) { c.Process.APIChannel = "/nonexistent-dir/q.sock" },
			`-api-channel: api-channel socket "/nonexistent-dir/q.sock": directory "/nonexistent-dir": no such file or directory`},
		{"api-channel parent is a file", func(c *VMConfig) { c.Process.APIChannel = notDir },
			`-api-channel: api-channel socket "` + notDir + `": not a directory`},
		{"api-channel too long", func(c *VMConfig) { c.Process.APIChannel = long },
			"-api-channel: api-channel socket path length 4097 out of range [1, 4096]"},
		{"pidfile without daemonize", func(c *VMConfig) { c.Process.PidFile = filepath.Join(dir, "pid") },
			"-pidfile: -pidfile must be used together with -daemonize"},
		{"pidfile with daemonize", func(c *VMConfig) {
			c.Process.PidFile, c.Process.Daemonize = filepath.Join(dir, "pid"), true
		}, ""},
		{"pidfile exists", func(c *VMConfig) { c.Process.PidFile, c.Process.Daemonize = existing, true },
			`-pidfile: pid file "` + existing + `" already exists (remove it first)`},
		{"daemonize alone", func(c *VMConfig) { c.Process.Daemonize = true }, ""},
		{"daemonize with serial stdio", func(c *VMConfig) { c.Process.Daemonize, c.Serial.Stdio = true, true },
			"-daemonize: -serial stdio and -daemonize cannot be used together"},
		{"log to stderr", func(c *VMConfig) { c.Process.Log = true }, ""},
		{"log file", func(c *VMConfig) { c.Process.Log, c.Process.LogFile = true, filepath.Join(dir, "log") }, ""},
		{"log path too long", func(c *VMConfig) { c.Process.Log, c.Process.LogFile = true, long },
			"-D: log file path length 4097 out of range [1, 4096]"},
		{"mem-path dir", func(c *VMConfig) { c.Machine.MemPath = dir }, ""},
		{"mem-path existing file", func(c *VMConfig) { c.Machine.MemPath = existing }, ""},
		{"mem-path new file", func(c *VMConfig) { c.Machine.MemPath = filepath.Join(dir, "ram") }, ""},
		{"mem-path relative", func(c *VMConfig) { c.Machine.MemPath = "hugepages" },
			`-mem-path: "hugepages" is not an absolute path`},
		{"mem-path missing dir", func(c *VMConfig) { c.Machine.MemPath = "/nonexistent-dir/ram" },
			`-mem-path: "/nonexistent-dir/ram" does not exist and its directory "/nonexistent-dir" is not a directory`},
		{"mem-path device", func(c *VMConfig) { c.Machine.MemPath = "/dev/null" },
			`-mem-path: "/dev/null" is neither a directory nor a regular file`},
		{"mem-path too long", func(c *VMConfig) { c.Machine.MemPath = long },
			"-mem-path: path length 4097 out of range [1, 4096]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Boot.Kernel = kernel
			tc.mod(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("err = %v\nwant  %s", err, tc.wantErr)
			}
		})
	}
}

func TestPageSizeAt(t *testing.T) {
	size, huge, err := PageSizeAt(t.TempDir())
	if err != nil || huge || size != uint64(os.Getpagesize()) {
		t.Errorf("PageSizeAt(tmp) = %d, %v, %v", size, huge, err)
	}
	if _, _, err := PageSizeAt("/nonexistent-dir"); err == nil {
		t.Error("PageSizeAt(missing) succeeded")
	}
	// On a host with hugetlbfs mounted, the page size must be a huge one
	// and memory sizes that are not multiples must be rejected.
	const hp = "/dev/hugepages"
	size, huge, err = PageSizeAt(hp)
	if err != nil || !huge {
		t.Skipf("%s is not hugetlbfs here", hp)
	}
	if size < 2<<20 {
		t.Errorf("huge page size %d", size)
	}
	if e := checkMemPath(hp, 256<<20+size/2); e == nil || !strings.Contains(e.Error(), "not a multiple of the huge page size") {
		t.Errorf("unaligned size accepted: %v", e)
	}
	if e := checkMemPath(hp, 256<<20); e != nil {
		t.Errorf("aligned size rejected: %v", e)
	}
}
