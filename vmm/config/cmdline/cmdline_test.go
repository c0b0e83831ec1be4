package cmdline

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

func TestParseOptions(t *testing.T) {
	def := config.Default()
	tests := []struct {
		name string
		args []string
		mod  func(c *config.VMConfig) // applied to Default() to get the expected config
	}{
		{"empty", nil, func(c *config.VMConfig) {}},
		{"name", []string{"-name", "vm1"}, func(c *config.VMConfig) { c.Name = "vm1" }},
		{"kernel", []string{"-kernel", "/path/to/vmlinux.bin"}, func(c *config.VMConfig) { c.Boot.Kernel = "/path/to/vmlinux.bin" }},
		{"initrd", []string{"-initrd", "/path/to/initrd.img"}, func(c *config.VMConfig) { c.Boot.Initrd = "/path/to/initrd.img" }},
		{"serial", []string{"-serial", "stdio"}, func(c *config.VMConfig) { c.Serial.Stdio = true }},
		{"smp bare", []string{"-smp", "4"}, func(c *config.VMConfig) { c.Machine.VCPUs = 4 }},
		{"smp key", []string{"-smp", "cpus=2"}, func(c *config.VMConfig) { c.Machine.VCPUs = 2 }},
		{"smp 0 parses", []string{"-smp", "0"}, func(c *config.VMConfig) { c.Machine.VCPUs = 0 }},
		{"m bytes", []string{"-m", "805306368"}, func(c *config.VMConfig) { c.Machine.MemSize = 805306368 }},
		{"m MiB", []string{"-m", "1024M"}, func(c *config.VMConfig) { c.Machine.MemSize = 1 << 30 }},
		{"m mib lower", []string{"-m", "512m"}, func(c *config.VMConfig) { c.Machine.MemSize = 512 << 20 }},
		{"m GiB", []string{"-m", "2G"}, func(c *config.VMConfig) { c.Machine.MemSize = 2 << 30 }},
		{"m gib lower key", []string{"-m", "size=1g"}, func(c *config.VMConfig) { c.Machine.MemSize = 1 << 30 }},
		{"machine type", []string{"-machine", "type=MicroVm"}, func(c *config.VMConfig) {}},
		{"machine positional lower", []string{"-machine", "microvm"}, func(c *config.VMConfig) {}},
		{"machine unknown type kept for Validate", []string{"-machine", "q35"}, func(c *config.VMConfig) { c.Machine.Type = "q35" }},
		{"machine options", []string{"-machine", "type=microvm,dump-guest-core=off,mem-share=on"},
			func(c *config.VMConfig) { c.Machine.DumpGuestCore = false; c.Machine.MemShare = true }},
		{"machine bool spellings", []string{"-machine", "dump-guest-core=no,mem-share=yes"},
			func(c *config.VMConfig) { c.Machine.DumpGuestCore = false; c.Machine.MemShare = true }},
		{"machine true/false", []string{"-machine", "dump-guest-core=false,mem-share=true"},
			func(c *config.VMConfig) { c.Machine.DumpGuestCore = false; c.Machine.MemShare = true }},
		{"append seed example", []string{"-kernel", "/k", "-append", "console=ttyS0", "root=/dev/vda", "rw", "reboot=k", "panic=1", "-serial", "stdio"},
			func(c *config.VMConfig) {
				c.Boot.Kernel = "/k"
				c.Boot.Cmdline = "console=ttyS0 root=/dev/vda rw reboot=k panic=1"
				c.Serial.Stdio = true
			}},
		{"append single quoted arg", []string{"-append", "console=ttyS0 reboot=k"}, func(c *config.VMConfig) { c.Boot.Cmdline = "console=ttyS0 reboot=k" }},
		{"append keeps double =", []string{"-append", "root=PARTUUID=1234-01", "init=/sbin/init"},
			func(c *config.VMConfig) { c.Boot.Cmdline = "root=PARTUUID=1234-01 init=/sbin/init" }},
		{"append repeated accumulates", []string{"-append", "a", "-append", "b=c"}, func(c *config.VMConfig) { c.Boot.Cmdline = "a b=c" }},
		{"append empty", []string{"-append", ""}, func(c *config.VMConfig) { c.Boot.Cmdline = "" }},
		{"append ends at known option", []string{"-append", "quiet", "-smp", "2"},
			func(c *config.VMConfig) { c.Boot.Cmdline = "quiet"; c.Machine.VCPUs = 2 }},
		{"full", []string{"-name", "sandbox-1", "-machine", "type=MicroVm,dump-guest-core=on,mem-share=off", "-kernel", "/k",
			"-append", "console=ttyS0", "-initrd", "/i", "-smp", "cpus=3", "-m", "256M", "-serial", "stdio"},
			func(c *config.VMConfig) {
				c.Name = "sandbox-1"
				c.Boot = config.Boot{Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0"}
				c.Machine.VCPUs = 3
				c.Serial.Stdio = true
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, act, err := Parse(tt.args)
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tt.args, err)
			}
			if act != Run {
				t.Errorf("action = %v, want Run", act)
			}
			want := def
			tt.mod(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(%q)\n got  %+v\n want %+v", tt.args, got, want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown option", []string{"-foo"}, "-foo: unknown option (use -h or -help for usage)"},
		{"double dash name", []string{"--name", "x"}, "--name: unknown option (use -h or -help for usage)"},
		{"unknown ends append", []string{"-append", "a", "-x"}, "-x: unknown option (use -h or -help for usage)"},
		{"negative smp is an option", []string{"-smp", "-1"}, "-1: unknown option (use -h or -help for usage)"},
		{"stray value", []string{"vmlinux"}, `unexpected argument "vmlinux" before any option (use -h or -help for usage)`},
		{"not implemented yet", []string{"-S"}, "-S: option not supported yet"},
		{"flag not implemented", []string{"-S"}, "-S: option not supported yet"},
		{"missing value", []string{"-kernel"}, "-kernel: requires a value, but none was supplied"},
		{"missing append value", []string{"-append", "-smp", "1"}, "-append: requires a value, but none was supplied"},
		{"repeated", []string{"-smp", "1", "-smp", "2"}, "-smp: provided more than once"},
		{"two values", []string{"-name", "a", "b"}, `-name: only one value expected, got 2: ["a" "b"]`},
		{"serial other", []string{"-serial", "pty"}, "-serial: invalid parameter 'pty' (supported: stdio)"},
		{"smp text", []string{"-smp", "x"}, "-smp: unable to parse 'x' for 'cpus'"},
		{"smp key text", []string{"-smp", "cpus=two"}, "-smp: unable to parse 'two' for 'cpus'"},
		{"smp huge", []string{"-smp", "99999999999999999999"}, "-smp: cpus 99999999999999999999 out of range [1, 254]"},
		{"smp over int32", []string{"-smp", "4294967296"}, "-smp: cpus 4294967296 out of range [1, 254]"},
		{"smp unknown key", []string{"-smp", "sockets=2"}, "-smp: invalid parameter 'sockets'"},
		{"smp second positional", []string{"-smp", "2,4"}, "-smp: invalid parameter '4'"},
		{"smp duplicate key", []string{"-smp", "2,cpus=3"}, "-smp: parameter 'cpus' is given more than once"},
		{"smp trailing comma", []string{"-smp", "2,"}, "-smp: invalid parameter ''"},
		{"smp empty value", []string{"-smp", "cpus="}, "-smp: invalid parameter 'cpus='"},
		{"smp leading =", []string{"-smp", "=2"}, "-smp: invalid parameter '=2'"},
		{"m text", []string{"-m", "lots"}, "-m: unable to parse 'lots' as a memory size (N bytes, NM or NG)"},
		{"m KiB unsupported", []string{"-m", "1024K"}, "-m: unable to parse '1024K' as a memory size (N bytes, NM or NG)"},
		{"m two units", []string{"-m", "1Mm"}, "-m: unable to parse '1Mm' as a memory size (N bytes, NM or NG)"},
		{"m unit only", []string{"-m", "G"}, "-m: unable to parse 'G' as a memory size (N bytes, NM or NG)"},
		{"m overflow", []string{"-m", "18446744073709551615G"}, "-m: integer overflow occurred while parsing '18446744073709551615G'"},
		{"m overflow digits", []string{"-m", "99999999999999999999"}, "-m: integer overflow occurred while parsing '99999999999999999999'"},
		{"m unknown key", []string{"-m", "slots=2"}, "-m: invalid parameter 'slots'"},
		{"machine unknown key", []string{"-machine", "accel=kvm"}, "-machine: invalid parameter 'accel'"},
		{"machine underscore key", []string{"-machine", "dump_guest_core=on"}, "-machine: invalid parameter 'dump_guest_core'"},
		{"machine bad bool", []string{"-machine", "mem-share=maybe"}, "-machine: unable to parse 'maybe' for 'mem-share' (on|off)"},
		{"machine dup", []string{"-machine", "microvm,type=microvm"}, "-machine: parameter 'type' is given more than once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse(tt.args)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Parse(%q) = %v\nwant %s", tt.args, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
		})
	}
}

func TestParseRangeErrorIsConfigError(t *testing.T) {
	_, _, err := Parse([]string{"-smp", "4294967296"})
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Option != "-smp" || ce.Field != "machine-config.vcpu_count" {
		t.Fatalf("err = %#v", err)
	}
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		want Action
	}{
		{[]string{"-h"}, ShowHelp},
		{[]string{"-help"}, ShowHelp},
		{[]string{"--help"}, ShowHelp},
		{[]string{"-V"}, ShowVersion},
		{[]string{"-version"}, ShowVersion},
		{[]string{"--version"}, ShowVersion},
		{[]string{"-smp", "bad", "-h"}, ShowHelp},      // help wins over errors
		{[]string{"-V", "-h"}, ShowHelp},               // help first
		{[]string{"-foo", "-version"}, ShowVersion},    // version wins over errors
		{[]string{"-kernel", "/k", "-V"}, ShowVersion}, // and over valid options
	}
	for _, tt := range tests {
		_, act, err := Parse(tt.args)
		if err != nil || act != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.args, act, err, tt.want)
		}
	}
	if u := Usage(); !strings.Contains(u, "-smp [cpus=]<n>") || !strings.Contains(u, "-append") {
		t.Errorf("usage text incomplete:\n%s", u)
	}
	if v := Version("0.1.0"); v != "StratoVirt 0.1.0" {
		t.Errorf("Version = %q", v)
	}
}

func TestApplyOverridesOnlyGivenOptions(t *testing.T) {
	c := config.Default()
	c.Boot.Kernel = "/from/json"
	c.Boot.Cmdline = "from json"
	c.Machine.VCPUs = 4
	if _, err := Apply(&c, []string{"-smp", "2"}); err != nil {
		t.Fatal(err)
	}
	if c.Machine.VCPUs != 2 || c.Boot.Kernel != "/from/json" || c.Boot.Cmdline != "from json" {
		t.Errorf("after Apply: %+v", c)
	}
	if _, err := Apply(&c, []string{"-append", "new"}); err != nil || c.Boot.Cmdline != "new" {
		t.Errorf("-append must replace boot_args: %q, %v", c.Boot.Cmdline, err)
	}
}

// TestParseThenValidateLimits checks every limit end to end, as the CLI runs
// them: parse, then Validate.
func TestParseThenValidateLimits(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinux.bin")
	if err := os.WriteFile(kernel, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"ok minimum", []string{"-smp", "1", "-m", "256M"}, ""},
		{"ok maximum", []string{"-smp", "254", "-m", "512G"}, ""},
		{"ok bytes", []string{"-m", "268435456"}, ""},
		{"cpus 0", []string{"-smp", "0"}, "-smp: cpus 0 out of range [1, 254]"},
		{"cpus 255", []string{"-smp", "cpus=255"}, "-smp: cpus 255 out of range [1, 254]"},
		{"mem 255M", []string{"-m", "255M"}, "-m: memory size 267386880 bytes out of range [268435456, 549755813888] (256 MiB to 512 GiB)"},
		{"mem 513G", []string{"-m", "513G"}, "-m: memory size 550829555712 bytes out of range [268435456, 549755813888] (256 MiB to 512 GiB)"},
		{"mem bytes meant as MiB", []string{"-m", "1024"}, "-m: memory size 1024 bytes out of range [268435456, 549755813888] (256 MiB to 512 GiB)"},
		{"mem unaligned", []string{"-m", "268435457"}, "-m: memory size 268435457 bytes is not a multiple of 1 MiB (1048576)"},
		{"name too long", []string{"-name", strings.Repeat("x", 256)}, "-name: name length 256 out of range [1, 255]"},
		{"name empty", []string{"-name", ""}, "-name: name length 0 out of range [1, 255]"},
		{"machine type", []string{"-machine", "type=virt"}, `-machine: type "virt" is not supported (supported: MicroVm)`},
		{"initrd missing", []string{"-initrd", "/nonexistent/initrd"}, `-initrd: initrd "/nonexistent/initrd": no such file or directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Parse(append([]string{"-kernel", kernel}, tt.args...))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Validate = %v\nwant %s", err, tt.want)
			}
		})
	}
	c, _, _ := Parse(nil)
	if err := c.Validate(); err == nil || err.Error() != "-kernel: a kernel image is required" {
		t.Errorf("no -kernel: %v", err)
	}
}

func TestParseMemSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"1048576", 1 << 20, true},
		{"1M", 1 << 20, true},
		{"1m", 1 << 20, true},
		{"1G", 1 << 30, true},
		{"1g", 1 << 30, true},
		{"17179869183G", 17179869183 << 30, true},
		{"17179869184G", 0, false},
		{"", 0, false},
		{"M", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1 M", 0, false},
		{"1MB", 0, false},
		{"0x10", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseMemSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseMemSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
