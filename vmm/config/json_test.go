package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// seedJSON is the seed document's JSON configuration example, verbatim.
const seedJSON = `{
  "boot-source": {
    "kernel_image_path": "/path/to/vmlinux.bin",
    "boot_args": "console=ttyS0 reboot=k panic=1 pci=off tsc=reliable ipv6.disable=1 root=/dev/vda quiet rw"
  },
 "machine-config": {
    "type": "MicroVm",
    "vcpu_count": 2,
    "mem_size": 268435456
  },
  "drive": [
    {
      "drive_id": "rootfs",
      "path_on_host": "/path/to/rootfs",
      "serial_num": "11111111",
      "direct": true,
      "read_only": false,
      "iops": 200000,
      "iothread": "iothread2"
    }
  ],
  "net": [
    {
      "iface_id": "net0",
      "host_dev_name": "tap0",
      "mac": "0e:90:df:9f:a8:88",
      "iothread": "iothread1"
    }
  ],
  "console": [
    {
    "console_id": "charconsole0",
    "socket_path": "/path/to/console.socket"
    }
  ],
  "serial": {
    "stdio": true
  },
  "vsock": {
    "vsock_id": "vsock-123321132",
    "guest_cid": 4
  },
  "iothread": [
    {"id": "iothread1"},
    {"id": "iothread2"}
  ]
}`

// removeSections deletes top-level sections from seedJSON by decoding
// and re-encoding only the kept keys, in order.
func seedWithout(t *testing.T, drop ...string) string {
	t.Helper()
	kvs, err := objectKeys("", []byte(seedJSON))
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
outer:
	for _, kv := range kvs {
		for _, d := range drop {
			if kv.key == d {
				continue outer
			}
		}
		parts = append(parts, `"`+kv.key+`":`+string(kv.val))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestDecodeJSONSeedExample(t *testing.T) {
	// Verbatim, every section has a device now.
	c := Default()
	if err := DecodeJSON([]byte(seedJSON), &c); err != nil {
		t.Fatalf("seed example: %v", err)
	}
	if c.Vsock == nil || *c.Vsock != (Vsock{ID: "vsock-123321132", GuestCID: 4}) {
		t.Errorf("seed vsock = %+v", c.Vsock)
	}
	// Without the sections of devices not built yet it decodes fully.
	c = Default()
	if err := DecodeJSON([]byte(seedWithout(t, "net", "console", "vsock")), &c); err != nil {
		t.Fatalf("seed example without net/console/vsock: %v", err)
	}
	if c.Boot.Kernel != "/path/to/vmlinux.bin" ||
		c.Boot.Cmdline != "console=ttyS0 reboot=k panic=1 pci=off tsc=reliable ipv6.disable=1 root=/dev/vda quiet rw" ||
		c.Boot.Initrd != "" {
		t.Errorf("boot = %+v", c.Boot)
	}
	if c.Machine.Type != "MicroVm" || c.Machine.VCPUs != 2 || c.Machine.MemSize != 268435456 ||
		!c.Machine.DumpGuestCore || c.Machine.MemShare {
		t.Errorf("machine = %+v", c.Machine)
	}
	if !c.Serial.Stdio {
		t.Error("serial.stdio not set")
	}
	if c.Name != DefaultName {
		t.Errorf("name = %q, want the default", c.Name)
	}
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		check   func(c *VMConfig) bool
		wantErr string // substring; "" means success
	}{
		{"empty object", `{}`, func(c *VMConfig) bool { return reflect.DeepEqual(*c, Default()) }, ""},
		{"boot all keys", `{"boot-source":{"kernel_image_path":"/k","boot_args":"a=b c","initrd_fs_path":"/i"}}`,
			func(c *VMConfig) bool { return c.Boot == Boot{Kernel: "/k", Cmdline: "a=b c", Initrd: "/i"} }, ""},
		{"machine all keys", `{"machine-config":{"type":"microvm","vcpu_count":4,"mem_size":805306368,"dump_guest_core":false,"mem_share":true,"mem_path":"/dev/hugepages"}}`,
			func(c *VMConfig) bool {
				return c.Machine == Machine{Type: "MicroVm", VCPUs: 4, MemSize: 805306368, MemShare: true, MemPath: "/dev/hugepages"}
			}, ""},
		{"seed spelling mem-share", `{"machine-config":{"mem-share":true}}`, func(c *VMConfig) bool { return c.Machine.MemShare }, ""},
		{"seed spelling mem-path", `{"machine-config":{"mem-path":"/p"}}`, func(c *VMConfig) bool { return c.Machine.MemPath == "/p" }, ""},
		{"mem_share twice", `{"machine-config":{"mem_share":true,"mem-share":false}}`, nil, `"machine-config"."mem-share": same setting as "mem_share"`},
		{"vcpu string", `{"machine-config":{"vcpu_count":"3"}}`, func(c *VMConfig) bool { return c.Machine.VCPUs == 3 }, ""},
		{"vcpu 254", `{"machine-config":{"vcpu_count":254}}`, func(c *VMConfig) bool { return c.Machine.VCPUs == 254 }, ""},
		{"vcpu huge", `{"machine-config":{"vcpu_count":99999999999999999999}}`, nil, "-smp: cpus 99999999999999999999 out of range [1, 254]"},
		{"vcpu float", `{"machine-config":{"vcpu_count":1.5}}`, nil, `"machine-config"."vcpu_count": unable to parse "1.5"`},
		{"vcpu bool", `{"machine-config":{"vcpu_count":true}}`, nil, `"machine-config"."vcpu_count": want a number or a string`},
		{"mem string M", `{"machine-config":{"mem_size":"512M"}}`, func(c *VMConfig) bool { return c.Machine.MemSize == 512<<20 }, ""},
		{"mem string G", `{"machine-config":{"mem_size":"2G"}}`, func(c *VMConfig) bool { return c.Machine.MemSize == 2<<30 }, ""},
		{"mem negative", `{"machine-config":{"mem_size":-1}}`, nil, `"machine-config"."mem_size": unable to parse '-1'`},
		{"mem overflow", `{"machine-config":{"mem_size":"99999999999999999G"}}`, nil, "integer overflow"},
		{"type other", `{"machine-config":{"type":"q35"}}`, func(c *VMConfig) bool { return c.Machine.Type == "q35" }, ""},
		{"serial", `{"serial":{"stdio":true}}`, func(c *VMConfig) bool { return c.Serial.Stdio }, ""},
		{"serial string", `{"serial":{"stdio":"yes"}}`, nil, `"serial"."stdio": want true or false`},
		{"unknown top key", `{"bogus":1}`, nil, `"bogus": unknown key`},
		{"unknown boot key", `{"boot-source":{"kernel":"/k"}}`, nil, `"boot-source"."kernel": unknown key`},
		{"unknown machine key", `{"machine-config":{"mem_slots":1}}`, nil, `"machine-config"."mem_slots": unknown key`},
		{"unknown serial key", `{"serial":{"stdio":true,"pty":true}}`, nil, `"serial"."pty": unknown key`},
		{"name has no key", `{"name":"vm"}`, nil, `"name": unknown key`},
		{"process keys are command line only", `{"Process":{}}`, nil, `"Process": unknown key`},
		{"net", `{"net":[{"iface_id":"net0","host_dev_name":"tap0","mac":"0e:90:df:9f:a8:88","iothread":"iothread1"},{"iface_id":"n1","tap_fd":5}]}`,
			func(c *VMConfig) bool {
				return len(c.Nets) == 2 && c.Nets[0] == Net{ID: "net0", TapName: "tap0", MAC: "0e:90:df:9f:a8:88", IOThread: "iothread1"} &&
					c.Nets[1] == Net{ID: "n1", TapFD: 5}
			}, ""},
		{"net vhost", `{"net":[{"iface_id":"n","host_dev_name":"t","vhost_type":"vhost-kernel"}]}`,
			func(c *VMConfig) bool { return c.Nets[0] == Net{ID: "n", TapName: "t", VhostType: NetVhostKernel} }, ""},
		{"net unknown key", `{"net":[{"iface_id":"n","host_dev_name":"t","vhostfds":"3"}]}`, nil, `"net"[0]."vhostfds": unknown key`},
		{"console", `{"console":[{"console_id":"charconsole0","socket_path":"/path/to/console.socket"}]}`,
			func(c *VMConfig) bool {
				return len(c.Consoles) == 1 && c.Consoles[0] == Console{ID: "charconsole0", SocketPath: "/path/to/console.socket"}
			}, ""},
		{"rng", `{"rng":{"random_file":"/dev/urandom","bytes_per_sec":1000}}`,
			func(c *VMConfig) bool {
				return c.RNG != nil && *c.RNG == RNG{RandomFile: "/dev/urandom", BytesPerSec: 1000}
			}, ""},
		{"rng getrandom", `{"rng":{}}`, func(c *VMConfig) bool { return c.RNG != nil && *c.RNG == RNG{} }, ""},
		{"vsock", `{"vsock":{"vsock_id":"v","guest_cid":3}}`, func(c *VMConfig) bool {
			return c.Vsock != nil && *c.Vsock == Vsock{ID: "v", GuestCID: 3}
		}, ""},
		{"vsock unix backend", `{"vsock":{"vsock_id":"v","guest_cid":4,"backend":"unix","uds_path":"/run/v.sock"}}`, func(c *VMConfig) bool {
			return c.Vsock != nil && *c.Vsock == Vsock{ID: "v", GuestCID: 4, Backend: "unix", UDSPath: "/run/v.sock"}
		}, ""},
		{"vsock cid as string", `{"vsock":{"vsock_id":"v","guest_cid":"3"}}`, nil, `"guest_cid": want a JSON uint64, not string`},
		{"vsock unknown key", `{"vsock":{"vsock_id":"v","guest_cid":3,"cid":3}}`, nil, `"cid": unknown key`},
		{"balloon", `{"balloon":{"deflate_on_oom":true}}`, func(c *VMConfig) bool { return c.Balloon != nil && c.Balloon.DeflateOnOOM }, ""},
		{"balloon reporting", `{"balloon":{"free_page_reporting":true}}`, func(c *VMConfig) bool {
			return c.Balloon != nil && c.Balloon.FreePageReporting && !c.Balloon.DeflateOnOOM
		}, ""},
		{"duplicate top key", `{"serial":{"stdio":true},"serial":{"stdio":false}}`, nil, `"serial": key given more than once`},
		{"not an object", `[1,2]`, nil, "the configuration: must be a JSON object"},
		{"section not an object", `{"serial":true}`, nil, `"serial": must be a JSON object`},
		{"truncated", `{"serial":{"stdio":true}`, nil, "unexpected end of JSON input"},
		{"trailing data", `{} {}`, nil, "unexpected data after the JSON object"},
		{"empty input", ``, nil, "unexpected end of JSON input"},
		{"string type error", `{"boot-source":{"boot_args":5}}`, nil, `"boot-source"."boot_args": want a string`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			err := DecodeJSON([]byte(tc.json), &c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !tc.check(&c) {
				t.Errorf("decoded %+v", c)
			}
		})
	}
}

// TestDecodeJSONGenericSection checks a device section decoded through
// its VMConfig field (the drive list): entries append, unknown keys in
// an entry are named.
func TestDecodeJSONGenericSection(t *testing.T) {
	if _, ok := fieldByJSONName(reflectConfig(), "drive"); !ok {
		t.Skip("VMConfig has no drive field yet")
	}
	c := Default()
	j := `{"drive":[{"drive_id":"a","path_on_host":"/a","read_only":true,"direct":false},{"drive_id":"b","path_on_host":"/b"}]}`
	if err := DecodeJSON([]byte(j), &c); err != nil {
		t.Fatal(err)
	}
	if got := len(jsonSlice(t, &c, "drive")); got != 2 {
		t.Fatalf("%d drives, want 2", got)
	}
	err := DecodeJSON([]byte(`{"drive":[{"drive_id":"c","path_on_host":"/c","bogus":1}]}`), &c)
	if err == nil || !strings.Contains(err.Error(), `"drive"[0]."bogus": unknown key`) {
		t.Fatalf("err = %v", err)
	}
	err = DecodeJSON([]byte(`{"drive":{"drive_id":"c"}}`), &c)
	if err == nil || !strings.Contains(err.Error(), `"drive": want a list of objects`) {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadJSONFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "vm.json")
	if err := os.WriteFile(good, []byte(`{"machine-config":{"vcpu_count":2}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Default()
	if err := LoadJSONFile(good, &c); err != nil || c.Machine.VCPUs != 2 {
		t.Fatalf("LoadJSONFile: %v, vcpus %d", err, c.Machine.VCPUs)
	}
	missing := filepath.Join(dir, "none.json")
	if err := LoadJSONFile(missing, &c); err == nil || err.Error() != `-config: config file "`+missing+`": no such file or directory` {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, []byte(`{"boot-source":{"boot_args":"`+strings.Repeat("x", MaxJSONSize)+`"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadJSONFile(big, &c); err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("big file: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"x":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadJSONFile(bad, &c); err == nil || err.Error() != `-config: config file "`+bad+`": "x": unknown key` {
		t.Errorf("bad file: %v", err)
	}
}

func TestParseMemSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		err  bool
	}{
		{"268435456", 256 << 20, false}, {"256M", 256 << 20, false}, {"256m", 256 << 20, false},
		{"1G", 1 << 30, false}, {"1g", 1 << 30, false}, {"", 0, true}, {"M", 0, true},
		{"1K", 0, true}, {"1Mm", 0, true}, {"-5", 0, true}, {"17179869184G", 0, true},
		{"18446744073709551615", 18446744073709551615, false}, {"18446744073709551616", 0, true},
	} {
		got, err := ParseMemSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseMemSize(%q) = %d, %v", tc.in, got, err)
		}
	}
}

// FuzzDecodeJSON: arbitrary bytes never panic; a successful decode
// leaves a config whose validation does not panic and whose machine type
// is canonical when it names the microVM.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(seedJSON))
	f.Add([]byte(`{"machine-config":{"vcpu_count":"2","mem_size":"1G","mem-share":true}}`))
	f.Add([]byte(`{"drive":[{"drive_id":"a","path_on_host":"/a"}],"iothread":[{"id":"x"}]}`))
	f.Add([]byte(`{"serial":{"stdio":true}}{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Default()
		if err := DecodeJSON(data, &c); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if IsMicroVM(c.Machine.Type) && c.Machine.Type != MachineTypeMicroVM {
			t.Fatalf("type %q not canonical", c.Machine.Type)
		}
		c.Boot.Kernel, c.Boot.Initrd, c.Machine.MemPath = "", "", "" // no file system access
		_ = c.Validate()
	})
}

func reflectConfig() reflect.Value {
	c := Default()
	return reflect.ValueOf(&c).Elem()
}

// jsonSlice returns the list field of c with JSON name key.
func jsonSlice(t *testing.T, c *VMConfig, key string) []any {
	t.Helper()
	fv, ok := fieldByJSONName(reflect.ValueOf(c).Elem(), key)
	if !ok || fv.Kind() != reflect.Slice {
		t.Fatalf("no list field %q", key)
	}
	out := make([]any, fv.Len())
	for i := range out {
		out[i] = fv.Index(i).Interface()
	}
	return out
}
