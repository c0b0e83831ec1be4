package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func tempFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefault(t *testing.T) {
	c := Default()
	if c.Name != "StratoVirt" || c.Machine.Type != "MicroVm" || c.Machine.VCPUs != 1 ||
		c.Machine.MemSize != 256<<20 || !c.Machine.DumpGuestCore || c.Machine.MemShare || c.Serial.Stdio {
		t.Errorf("Default() = %+v", c)
	}
}

func TestValidate(t *testing.T) {
	kernel := tempFile(t, "vmlinux.bin")
	initrd := tempFile(t, "initrd.img")
	dir := t.TempDir()
	long := "/" + strings.Repeat("a", MaxPathLen)

	tests := []struct {
		name    string
		mod     func(c *VMConfig)
		wantErr string // exact text; "" means valid
	}{
		{"defaults with kernel", func(c *VMConfig) {}, ""},
		{"all fields", func(c *VMConfig) {
			c.Boot.Initrd = initrd
			c.Boot.Cmdline = "console=ttyS0"
			c.Serial.Stdio = true
			c.Machine.MemShare = true
		}, ""},
		{"name 255", func(c *VMConfig) { c.Name = strings.Repeat("n", 255) }, ""},
		{"name empty", func(c *VMConfig) { c.Name = "" }, "-name: name length 0 out of range [1, 255]"},
		{"name 256", func(c *VMConfig) { c.Name = strings.Repeat("n", 256) }, "-name: name length 256 out of range [1, 255]"},
		{"type lower case", func(c *VMConfig) { c.Machine.Type = "microvm" }, ""},
		{"type empty is default", func(c *VMConfig) { c.Machine.Type = "" }, ""},
		{"type unknown", func(c *VMConfig) { c.Machine.Type = "q35" }, `-machine: type "q35" is not supported (supported: MicroVm)`},
		{"cpus 1", func(c *VMConfig) { c.Machine.VCPUs = 1 }, ""},
		{"cpus 254", func(c *VMConfig) { c.Machine.VCPUs = 254 }, ""},
		{"cpus 0", func(c *VMConfig) { c.Machine.VCPUs = 0 }, "-smp: cpus 0 out of range [1, 254]"},
		{"cpus 255", func(c *VMConfig) { c.Machine.VCPUs = 255 }, "-smp: cpus 255 out of range [1, 254]"},
		{"cpus 300", func(c *VMConfig) { c.Machine.VCPUs = 300 }, "-smp: cpus 300 out of range [1, 254]"},
		{"cpus negative", func(c *VMConfig) { c.Machine.VCPUs = -1 }, "-smp: cpus -1 out of range [1, 254]"},
		{"mem min", func(c *VMConfig) { c.Machine.MemSize = 256 << 20 }, ""},
		{"mem max", func(c *VMConfig) { c.Machine.MemSize = 512 << 30 }, ""},
		{"mem too small", func(c *VMConfig) { c.Machine.MemSize = 255 << 20 },
			"-m: memory size 267386880 bytes out of range [268435456, 549755813888] (256 MiB to 512 GiB)"},
		{"mem too big", func(c *VMConfig) { c.Machine.MemSize = 512<<30 + 1<<20 },
			"-m: memory size 549756862464 bytes out of range [268435456, 549755813888] (256 MiB to 512 GiB)"},
		{"mem unaligned", func(c *VMConfig) { c.Machine.MemSize = 256<<20 + 1 },
			"-m: memory size 268435457 bytes is not a multiple of 1 MiB (1048576)"},
		{"kernel missing", func(c *VMConfig) { c.Boot.Kernel = "" }, "-kernel: a kernel image is required"},
		{"kernel absent", func(c *VMConfig) { c.Boot.Kernel = "/nonexistent/vmlinux" },
			`-kernel: kernel image "/nonexistent/vmlinux": no such file or directory`},
		{"kernel dir", func(c *VMConfig) { c.Boot.Kernel = dir }, `-kernel: kernel image "` + dir + `" is not a regular file`},
		{"kernel path too long", func(c *VMConfig) { c.Boot.Kernel = long }, "-kernel: kernel image path length 4097 out of range [1, 4096]"},
		{"initrd absent", func(c *VMConfig) { c.Boot.Initrd = "/nonexistent/initrd" },
			`-initrd: initrd "/nonexistent/initrd": no such file or directory`},
		{"initrd dir", func(c *VMConfig) { c.Boot.Initrd = dir }, `-initrd: initrd "` + dir + `" is not a regular file`},
		{"two errors", func(c *VMConfig) { c.Machine.VCPUs = 0; c.Name = "" },
			"-name: name length 0 out of range [1, 255]\n-smp: cpus 0 out of range [1, 254]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Boot.Kernel = kernel
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Validate() = %v\nwant %s", err, tt.wantErr)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Option == "" {
				t.Errorf("error is not a *config.Error with an option: %#v", err)
			}
		})
	}
}

func TestValidateUnreadableKernel(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can read any file")
	}
	k := tempFile(t, "vmlinux")
	if err := os.Chmod(k, 0); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.Boot.Kernel = k
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "is not readable") {
		t.Fatalf("Validate() = %v", err)
	}
}

func TestJSONFieldNames(t *testing.T) {
	// The seed's -config example maps onto VMConfig field for field.
	seed := `{
	  "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0 rw", "initrd_fs_path": "/i"},
	  "machine-config": {"type": "MicroVm", "vcpu_count": 2, "mem_size": 268435456, "dump_guest_core": false, "mem_share": true},
	  "serial": {"stdio": true}
	}`
	c := Default()
	dec := json.NewDecoder(strings.NewReader(seed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	want := VMConfig{
		Name:    DefaultName,
		Machine: Machine{Type: "MicroVm", VCPUs: 2, MemSize: 268435456, DumpGuestCore: false, MemShare: true},
		Boot:    Boot{Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0 rw"},
		Serial:  Serial{Stdio: true},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded %+v\nwant    %+v", c, want)
	}
}
