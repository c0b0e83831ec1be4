package cmdline

import (
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

func TestNetConsoleRNGOptions(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(c *config.VMConfig) bool
		err   string
	}{
		{"seed netdev", []string{"-netdev", "id=iface_id,netdev=tap0,mac=0e:90:df:9f:a8:88,iothread=iothread2"},
			func(c *config.VMConfig) bool {
				return len(c.Nets) == 1 && c.Nets[0] == config.Net{ID: "iface_id", TapName: "tap0", MAC: "0e:90:df:9f:a8:88", IOThread: "iothread2"}
			}, ""},
		{"two netdevs in order", []string{"-netdev", "id=a,netdev=tap0", "-netdev", "tap,id=b,ifname=tap1"},
			func(c *config.VMConfig) bool {
				return len(c.Nets) == 2 && c.Nets[0].TapName == "tap0" && c.Nets[1] == config.Net{ID: "b", TapName: "tap1"}
			}, ""},
		{"fds", []string{"-netdev", "id=a,fds=3"}, func(c *config.VMConfig) bool { return c.Nets[0] == config.Net{ID: "a", TapFD: 3} }, ""},
		{"fd alias", []string{"-netdev", "id=a,fd=4,vhost=off"}, func(c *config.VMConfig) bool { return c.Nets[0].TapFD == 4 }, ""},
		{"netdev no id", []string{"-netdev", "netdev=tap0"}, nil, "-netdev: 'id' is missing"},
		{"netdev no tap", []string{"-netdev", "id=a,mac=0e:90:df:9f:a8:88"}, nil, "'netdev' is missing"},
		{"netdev bad fd", []string{"-netdev", "id=a,fds=x"}, nil, "unable to parse 'x' for 'fds'"},
		{"netdev fd 0", []string{"-netdev", "id=a,fds=0"}, nil, "unable to parse '0' for 'fds'"},
		{"netdev vhost", []string{"-netdev", "id=a,netdev=t,vhost=on"},
			func(c *config.VMConfig) bool {
				return c.Nets[0] == config.Net{ID: "a", TapName: "t", VhostType: config.NetVhostKernel}
			}, ""},
		{"netdev vhost off", []string{"-netdev", "tap,id=a,ifname=t,vhost=off"},
			func(c *config.VMConfig) bool { return c.Nets[0] == config.Net{ID: "a", TapName: "t"} }, ""},
		{"netdev vhost bad", []string{"-netdev", "id=a,netdev=t,vhost=yes please"}, nil, "unable to parse 'yes please' for 'vhost' (on|off)"},
		{"netdev user", []string{"-netdev", "user,id=a"}, nil, "type 'user' is not supported"},
		{"netdev alias twice", []string{"-netdev", "id=a,netdev=t,ifname=u"}, nil, "'netdev' and 'ifname' are the same setting"},
		{"netdev unknown key", []string{"-netdev", "id=a,netdev=t,queues=2"}, nil, "-netdev: invalid parameter 'queues'"},
		{"chardev", []string{"-chardev", "id=console_id,path=/path/to/socket"},
			func(c *config.VMConfig) bool {
				return len(c.Consoles) == 1 && c.Consoles[0] == config.Console{ID: "console_id", SocketPath: "/path/to/socket"}
			}, ""},
		{"chardev v2 style", []string{"-chardev", "socket,id=c,path=/s,server,nowait"},
			func(c *config.VMConfig) bool { return c.Consoles[0] == config.Console{ID: "c", SocketPath: "/s"} }, ""},
		{"chardev no path", []string{"-chardev", "id=c"}, nil, "-chardev: 'path' is missing"},
		{"chardev no id", []string{"-chardev", "path=/s"}, nil, "-chardev: 'id' is missing"},
		{"rng file", []string{"-rng", "random_file=/dev/urandom,bytes_per_sec=1000"},
			func(c *config.VMConfig) bool {
				return c.RNG != nil && *c.RNG == config.RNG{RandomFile: "/dev/urandom", BytesPerSec: 1000}
			}, ""},
		{"rng getrandom", []string{"-rng", "getrandom"}, func(c *config.VMConfig) bool { return c.RNG != nil && *c.RNG == config.RNG{} }, ""},
		{"rng nothing", []string{"-rng", "bytes_per_sec=100"}, nil, "'random_file' is missing"},
		{"rng bad source", []string{"-rng", "urandom"}, nil, "invalid parameter 'urandom'"},
		{"rng twice", []string{"-rng", "getrandom", "-rng", "getrandom"}, nil, "-rng: provided more than once"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := Parse(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(&c) {
				t.Errorf("parsed nets %+v consoles %+v rng %+v", c.Nets, c.Consoles, c.RNG)
			}
		})
	}
}
