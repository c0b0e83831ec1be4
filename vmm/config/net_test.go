package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMAC(t *testing.T) {
	for _, c := range []struct {
		s    string
		want [6]byte
		err  string
	}{
		{"0e:90:df:9f:a8:88", [6]byte{0x0e, 0x90, 0xdf, 0x9f, 0xa8, 0x88}, ""},
		{"12:34:56:78:9A:BC", [6]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc}, ""},
		{"12:34:56:78:9a", [6]byte{}, "illegal"},
		{"12-34-56-78-9a-bc", [6]byte{}, "illegal"},
		{"123:4:56:78:9a:bc", [6]byte{}, "illegal"},
		{"12:34:56:78:9a:bg", [6]byte{}, "illegal"},
		{"+1:34:56:78:9a:bc", [6]byte{}, "illegal"},
		{"01:00:5e:00:00:01", [6]byte{}, "multicast"},
		{"00:00:00:00:00:00", [6]byte{}, "all zeroes"},
	} {
		got, err := ParseMAC(c.s)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseMAC(%q) = %v, want error with %q", c.s, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseMAC(%q) = %x, %v; want %x", c.s, got, err, c.want)
		}
	}
}

func TestValidateNets(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, []byte("k"), 0o644)
	existing := filepath.Join(dir, "exists.sock")
	os.WriteFile(existing, nil, 0o644)
	base := func() VMConfig {
		c := Default()
		c.Boot.Kernel = kernel
		c.IOThreads = []IOThread{{ID: "io1"}}
		return c
	}
	tests := []struct {
		name string
		mod  func(c *VMConfig)
		want string // "" = valid
	}{
		{"two nics", func(c *VMConfig) {
			c.Nets = []Net{{ID: "n0", TapName: "tap0", MAC: "0e:90:df:9f:a8:88", IOThread: "io1"}, {ID: "n1", TapFD: 3}}
		}, ""},
		{"three nics", func(c *VMConfig) {
			c.Nets = []Net{{ID: "a", TapName: "t0"}, {ID: "b", TapName: "t1"}, {ID: "c", TapName: "t2"}}
		}, "-netdev: NIC number 3 out of range [0, 2]"},
		{"no id", func(c *VMConfig) { c.Nets = []Net{{TapName: "t"}} }, "'id' is missing"},
		{"dup id", func(c *VMConfig) { c.Nets = []Net{{ID: "a", TapName: "t0"}, {ID: "a", TapName: "t1"}} }, `id "a" is given more than once`},
		{"no tap", func(c *VMConfig) { c.Nets = []Net{{ID: "a"}} }, "'netdev' (tap name) or 'fds' is missing"},
		{"long tap", func(c *VMConfig) { c.Nets = []Net{{ID: "a", TapName: "0123456789abcdef"}} }, "tap name length 16 out of range [1, 15]"},
		{"bad tap", func(c *VMConfig) { c.Nets = []Net{{ID: "a", TapName: "x/y"}} }, "not a valid interface name"},
		{"bad mac", func(c *VMConfig) { c.Nets = []Net{{ID: "a", TapName: "t", MAC: "zz"}} }, "mac address \"zz\" is illegal"},
		{"no iothread", func(c *VMConfig) { c.Nets = []Net{{ID: "a", TapName: "t", IOThread: "io2"}} }, `iothread "io2" is not configured`},
		{"vhost-kernel", func(c *VMConfig) { c.Nets = []Net{{ID: "a", TapName: "t", VhostType: NetVhostKernel}} }, ""},
		{"vhost-user", func(c *VMConfig) { c.Nets = []Net{{ID: "a", TapName: "t", VhostType: "vhost-user"}} }, `vhost_type "vhost-user" is not supported`},
		{"console", func(c *VMConfig) { c.Consoles = []Console{{ID: "c0", SocketPath: filepath.Join(dir, "c.sock")}} }, ""},
		{"console exists", func(c *VMConfig) { c.Consoles = []Console{{ID: "c0", SocketPath: existing}} }, "already exists"},
		{"console no path", func(c *VMConfig) { c.Consoles = []Console{{ID: "c0"}} }, "'path' is missing"},
		{"console long path", func(c *VMConfig) { c.Consoles = []Console{{ID: "c0", SocketPath: "/" + strings.Repeat("a", 107)}} }, "socket path length 108"},
		{"console dup", func(c *VMConfig) {
			c.Consoles = []Console{{ID: "c0", SocketPath: "/tmp/x.sock"}, {ID: "c0", SocketPath: "/tmp/y.sock"}}
		}, `id "c0" is given more than once`},
		{"rng", func(c *VMConfig) { c.RNG = &RNG{} }, ""},
		{"rng file", func(c *VMConfig) { c.RNG = &RNG{RandomFile: "/dev/urandom", BytesPerSec: 64} }, ""},
		{"rng slow", func(c *VMConfig) { c.RNG = &RNG{BytesPerSec: 63} }, "bytes_per_sec 63 out of range [64, 1000000000]"},
		{"rng dir", func(c *VMConfig) { c.RNG = &RNG{RandomFile: dir} }, "neither a character device nor a regular file"},
		{"rng missing", func(c *VMConfig) { c.RNG = &RNG{RandomFile: "/nonexistent"} }, "no such file"},
		{"mmio limit", func(c *VMConfig) {
			for i := range 9 {
				c.Consoles = append(c.Consoles, Console{ID: string(rune('a' + i)), SocketPath: filepath.Join(dir, string(rune('a'+i)))})
			}
			c.Nets = []Net{{ID: "a", TapName: "t0"}, {ID: "b", TapName: "t1"}}
			c.RNG = &RNG{}
		}, "12 virtio-mmio devices out of range [0, 11]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}
