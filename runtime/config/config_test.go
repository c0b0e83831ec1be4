package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		err      string
		check    func(*Config) bool
	}{
		{"empty gives defaults", "", "", func(c *Config) bool {
			return c.Hypervisor.DefaultVCPUs == 1 && c.Hypervisor.DefaultMemoryMiB == 512 && c.Runtime.RootfsFormat == FormatAuto
		}},
		{"values", "[hypervisor]\nkernel='/k'\ndefault_vcpus=2\ndefault_memory=1024\nvsock_backend='userspace'\nboot_timeout='5s'\n[runtime]\nrootfs_format='erofs'\nlog_level='debug'\n", "", func(c *Config) bool {
			d, _ := c.BootTimeout()
			return c.Hypervisor.Kernel == "/k" && c.Hypervisor.DefaultVCPUs == 2 && c.Hypervisor.DefaultMemoryMiB == 1024 &&
				c.Hypervisor.VsockBackend == VsockUserspace && d == 5*time.Second && c.Runtime.RootfsFormat == FormatErofs
		}},
		{"root image by default", "", "", func(c *Config) bool {
			return c.Hypervisor.Image == "/usr/share/stratovirt/root.erofs" && c.Hypervisor.Initrd == ""
		}},
		{"initrd", "[hypervisor]\ninitrd='/i'\n", "", func(c *Config) bool { return c.Hypervisor.Initrd == "/i" }},
		{"no root filesystem", "[hypervisor]\nimage=''\n", "hypervisor.image or hypervisor.initrd: one is required", nil},
		{"unknown key", "[hypervisor]\nkernal='/k'\n", "unknown key", nil},
		{"vcpus range", "[hypervisor]\ndefault_vcpus=0\n", "default_vcpus: 0 out of range", nil},
		{"memory range", "[hypervisor]\ndefault_memory=100\n", "default_memory: 100 MiB out of range", nil},
		{"max memory below default", "[hypervisor]\nmax_memory=300\n", "max_memory", nil},
		{"backend", "[hypervisor]\nvsock_backend='tcp'\n", "vsock_backend", nil},
		{"net backend", "[hypervisor]\nnet_backend='dpdk'\n", `hypervisor.net_backend: "dpdk" is not "auto", "vhost" or "userspace"`, nil},
		{"net backend vhost", "[hypervisor]\nnet_backend='vhost'\n", "", func(c *Config) bool { return c.Hypervisor.NetBackend == NetVhost }},
		{"net backend default", "[hypervisor]\n", "", func(c *Config) bool { return c.Hypervisor.NetBackend == NetAuto }},
		{"iops", "[hypervisor]\ndisk_iops=2000000\n", "disk_iops", nil},
		{"timeout", "[hypervisor]\nboot_timeout='soon'\n", "boot_timeout", nil},
		{"regex", "[hypervisor]\nenable_annotations=['(']\n", "enable_annotations", nil},
		{"glob", "[hypervisor]\nvalid_kernel_paths=['rel/*']\n", "absolute glob", nil},
		{"format", "[runtime]\nrootfs_format='xfs'\n", "rootfs_format", nil},
		{"level", "[runtime]\nlog_level='loud'\n", "log_level", nil},
		{"workdir", "[runtime]\nwork_dir='run'\n", "work_dir", nil},
		{"rootfs cache relative", "[runtime]\nrootfs_cache_dir='cache'\n", "rootfs_cache_dir", nil},
		{"rootfs cache off", "[runtime]\nrootfs_cache_dir=''\n", "", func(c *Config) bool { return c.Runtime.RootfsCacheDir == "" }},
		{"rootfs cache default", "", "", func(c *Config) bool { return c.Runtime.RootfsCacheDir == "/var/lib/stratovirt/rootfs-cache" }},
		{"syntax", "[hypervisor\n", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in))
			if tc.check != nil {
				if err != nil {
					t.Fatal(err)
				}
				if !tc.check(c) {
					t.Fatalf("unexpected config %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

func TestLoadAndPath(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(p, []byte("[hypervisor]\ndefault_vcpus=3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil || c.Hypervisor.DefaultVCPUs != 3 {
		t.Fatalf("load: %+v %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file loaded")
	}
	big := filepath.Join(dir, "big.toml")
	os.WriteFile(big, make([]byte, MaxFileSize+10), 0o644)
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("big file: %v", err)
	}
	t.Setenv(EnvPath, "/env.toml")
	if got := Path("/opt.toml"); got != "/opt.toml" {
		t.Errorf("Path(opt) = %q", got)
	}
	if got := Path(""); got != "/env.toml" {
		t.Errorf("Path(env) = %q", got)
	}
	t.Setenv(EnvPath, "")
	if got := Path(""); got != DefaultPath {
		t.Errorf("Path() = %q", got)
	}
}

func TestAnnotationsAndPaths(t *testing.T) {
	c := Default()
	c.Hypervisor.EnableAnnotations = []string{"default_.*", "kernel"}
	for name, want := range map[string]bool{"default_vcpus": true, "default_memory": true, "kernel": true, "kernel_params": false, "xdefault_vcpus": false} {
		if got := c.AnnotationEnabled(name); got != want {
			t.Errorf("AnnotationEnabled(%q) = %v", name, got)
		}
	}
	globs := []string{"/usr/share/stratovirt/*"}
	for p, want := range map[string]bool{
		"/usr/share/stratovirt/vmlinuz": true, "/usr/share/stratovirt/../../etc/shadow": false,
		"/usr/share/stratovirt/a/b": false, "usr/share/stratovirt/x": false, "/etc/passwd": false,
	} {
		if got := PathAllowed(p, globs); got != want {
			t.Errorf("PathAllowed(%q) = %v", p, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("[hypervisor]\ndefault_vcpus=2\n"))
	f.Add([]byte("[runtime]\nrootfs_format='ext4'\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c.Validate() != nil {
			t.Fatal("Parse returned an invalid config")
		}
	})
}
