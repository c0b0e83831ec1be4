package cmdline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

func TestParseProcessOptions(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(c config.VMConfig) bool
	}{
		{"api-channel", []string{"-api-channel", "unix:/tmp/stratovirt.socket"},
			func(c config.VMConfig) bool { return c.Process.APIChannel == "/tmp/stratovirt.socket" }},
		{"api-channel extra ignored", []string{"-api-channel", "unix:/run/q.sock,server,nowait"},
			func(c config.VMConfig) bool { return c.Process.APIChannel == "/run/q.sock" }},
		{"api-channel colon in path", []string{"-api-channel", "unix:/run/a:b.sock"},
			func(c config.VMConfig) bool { return c.Process.APIChannel == "/run/a:b.sock" }},
		{"daemonize", []string{"-daemonize"}, func(c config.VMConfig) bool { return c.Process.Daemonize }},
		{"disable-seccomp", []string{"-disable-seccomp"}, func(c config.VMConfig) bool { return c.Process.DisableSeccomp }},
		{"pidfile", []string{"-daemonize", "-pidfile", "/run/sv.pid"},
			func(c config.VMConfig) bool { return c.Process.PidFile == "/run/sv.pid" && c.Process.Daemonize }},
		{"D without path", []string{"-D"}, func(c config.VMConfig) bool { return c.Process.Log && c.Process.LogFile == "" }},
		{"D without path before option", []string{"-D", "-smp", "2"},
			func(c config.VMConfig) bool { return c.Process.Log && c.Process.LogFile == "" && c.Machine.VCPUs == 2 }},
		{"D with path", []string{"-D", "/var/log/sv.log"},
			func(c config.VMConfig) bool { return c.Process.Log && c.Process.LogFile == "/var/log/sv.log" }},
		{"mem-path", []string{"-mem-path", "/dev/hugepages"},
			func(c config.VMConfig) bool { return c.Machine.MemPath == "/dev/hugepages" }},
		{"defaults", nil, func(c config.VMConfig) bool { return c.Process == config.Process{} && c.Machine.MemPath == "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, act, err := Parse(tc.args)
			if err != nil || act != Run {
				t.Fatalf("Parse(%q) = %v, %v", tc.args, act, err)
			}
			if !tc.check(c) {
				t.Errorf("Parse(%q) = %+v", tc.args, c)
			}
		})
	}
}

func TestParseProcessErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"api-channel tcp", []string{"-api-channel", "tcp:127.0.0.1:4444"}, "-api-channel: tcp type is not supported (supported: unix)"},
		{"api-channel no colon", []string{"-api-channel", "/tmp/q.sock"}, "-api-channel: failed to parse '/tmp/q.sock' (want unix:PATH)"},
		{"api-channel empty path", []string{"-api-channel", "unix:"}, "-api-channel: the socket path is empty (want unix:PATH)"},
		{"api-channel missing", []string{"-api-channel"}, "-api-channel: requires a value, but none was supplied"},
		{"api-channel twice", []string{"-api-channel", "unix:/a", "-api-channel", "unix:/b"}, "-api-channel: provided more than once"},
		{"daemonize value", []string{"-daemonize", "yes"}, `-daemonize: takes no value, got "yes"`},
		{"daemonize twice", []string{"-daemonize", "-daemonize"}, "-daemonize: provided more than once"},
		{"disable-seccomp value", []string{"-disable-seccomp", "1"}, `-disable-seccomp: takes no value, got "1"`},
		{"D two values", []string{"-D", "a", "b"}, `-D: at most one value expected, got 2: ["a" "b"]`},
		{"D twice", []string{"-D", "-D", "x"}, "-D: provided more than once"},
		{"pidfile missing", []string{"-pidfile"}, "-pidfile: requires a value, but none was supplied"},
		{"mem-path two", []string{"-mem-path", "/a", "/b"}, `-mem-path: only one value expected, got 2: ["/a" "/b"]`},
		{"config missing", []string{"-config"}, "-config: requires a value, but none was supplied"},
		{"config twice", []string{"-config", "a.json", "-config", "b.json"}, "-config: provided more than once"},
		{"config two values", []string{"-config", "a.json", "b.json"}, `-config: only one value expected, got 2: ["a.json" "b.json"]`},
		{"config missing file", []string{"-config", "/nonexistent/vm.json"}, `-config: config file "/nonexistent/vm.json": no such file or directory`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse(tc.args)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Parse(%q) = %v\nwant %s", tc.args, err, tc.want)
			}
		})
	}
}

// TestConfigFileMerge: the JSON file is applied first, options override
// its scalars and -append replaces boot_args, whatever the order.
func TestConfigFileMerge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vm.json")
	j := `{"boot-source":{"kernel_image_path":"/json/k","boot_args":"console=ttyS0 quiet"},
	"machine-config":{"vcpu_count":4,"mem_size":"1G","dump_guest_core":false},"serial":{"stdio":true}}`
	if err := os.WriteFile(p, []byte(j), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := Parse([]string{"-smp", "2", "-config", p, "-append", "root=/dev/vda", "rw", "-name", "n"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Machine.VCPUs != 2 || c.Machine.MemSize != 1<<30 || c.Machine.DumpGuestCore ||
		c.Boot.Kernel != "/json/k" || c.Boot.Cmdline != "root=/dev/vda rw" || !c.Serial.Stdio || c.Name != "n" {
		t.Errorf("merged config %+v", c)
	}
	c, _, err = Parse([]string{"-config", p, "-machine", "dump-guest-core=on", "-m", "512M", "-kernel", "/cli/k"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Machine.VCPUs != 4 || c.Machine.MemSize != 512<<20 || !c.Machine.DumpGuestCore || c.Boot.Kernel != "/cli/k" ||
		c.Boot.Cmdline != "console=ttyS0 quiet" {
		t.Errorf("merged config %+v", c)
	}
	// A bad file is reported with the option and the key.
	if err := os.WriteFile(p, []byte(`{"machine-config":{"cpus":1}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Parse([]string{"-config", p}); err == nil || !strings.HasSuffix(err.Error(), `"machine-config"."cpus": unknown key`) {
		t.Errorf("bad file: %v", err)
	}
}
