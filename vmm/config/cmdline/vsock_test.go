package cmdline

import (
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

func TestDeviceAndBalloon(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		vsock   *config.Vsock
		balloon *config.Balloon
		err     string
	}{
		{"seed vsock", []string{"-device", "vsock,id=vsock_id,guest-cid=3"}, &config.Vsock{ID: "vsock_id", GuestCID: 3}, nil, ""},
		{"unix backend", []string{"-device", "vsock,id=v,guest-cid=7,backend=unix,uds-path=/run/v.sock"},
			&config.Vsock{ID: "v", GuestCID: 7, Backend: "unix", UDSPath: "/run/v.sock"}, nil, ""},
		{"cid too large to parse", []string{"-device", "vsock,id=v,guest-cid=99999999999999999999"}, nil, nil, "out of range"},
		{"cid not a number", []string{"-device", "vsock,id=v,guest-cid=x"}, nil, nil, "-device: unable to parse 'x' for 'guest-cid'"},
		{"unknown type", []string{"-device", "virtio-net,id=v"}, nil, nil, "-device: unknown device type 'virtio-net'"},
		{"missing type", []string{"-device", "id=v,guest-cid=3"}, nil, nil, "device type is missing"},
		{"missing cid", []string{"-device", "vsock,id=v"}, nil, nil, "'guest-cid' is missing"},
		{"missing id", []string{"-device", "vsock,guest-cid=3"}, nil, nil, "'id' is missing"},
		{"twice", []string{"-device", "vsock,id=a,guest-cid=3", "-device", "vsock,id=b,guest-cid=4"}, nil, nil, "-device: provided more than once"},
		{"unknown key", []string{"-device", "vsock,id=a,guest-cid=3,cid=3"}, nil, nil, "-device: invalid parameter 'cid'"},
		{"balloon on", []string{"-balloon", "deflate-on-oom=true"}, nil, &config.Balloon{DeflateOnOOM: true}, ""},
		{"balloon off", []string{"-balloon", "deflate-on-oom=false"}, nil, &config.Balloon{}, ""},
		{"balloon bad bool", []string{"-balloon", "deflate-on-oom=maybe"}, nil, nil, "unable to parse 'maybe' for 'deflate-on-oom'"},
		{"balloon reporting", []string{"-balloon", "deflate-on-oom=on,free-page-reporting=true"}, nil, &config.Balloon{DeflateOnOOM: true, FreePageReporting: true}, ""},
		{"balloon reporting only", []string{"-balloon", "free-page-reporting=on"}, nil, &config.Balloon{FreePageReporting: true}, ""},
		{"balloon reporting bad bool", []string{"-balloon", "free-page-reporting=2"}, nil, nil, "unable to parse '2' for 'free-page-reporting'"},
		{"balloon bad key", []string{"-balloon", "size=1"}, nil, nil, "-balloon: invalid parameter 'size'"},
	} {
		c, _, err := Parse(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if (tc.vsock == nil) != (c.Vsock == nil) || (tc.vsock != nil && *tc.vsock != *c.Vsock) {
			t.Errorf("%s: vsock %+v, want %+v", tc.name, c.Vsock, tc.vsock)
		}
		if (tc.balloon == nil) != (c.Balloon == nil) || (tc.balloon != nil && *tc.balloon != *c.Balloon) {
			t.Errorf("%s: balloon %+v, want %+v", tc.name, c.Balloon, tc.balloon)
		}
	}
}

func TestDevicePmem(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		pmems []config.Pmem
		err   string
	}{
		{"one", []string{"-device", "virtio-pmem,id=p0,file=/img"}, []config.Pmem{{ID: "p0", File: "/img"}}, ""},
		{"read-only and a second", []string{"-device", "virtio-pmem,id=p0,file=/a,readonly=on", "-device", "virtio-pmem,id=p1,file=/b,readonly=off"},
			[]config.Pmem{{ID: "p0", File: "/a", ReadOnly: true}, {ID: "p1", File: "/b"}}, ""},
		{"with vsock", []string{"-device", "vsock,id=v,guest-cid=3", "-device", "virtio-pmem,id=p0,file=/a"}, []config.Pmem{{ID: "p0", File: "/a"}}, ""},
		{"no id", []string{"-device", "virtio-pmem,file=/a"}, nil, "'id' is missing for 'virtio-pmem'"},
		{"no file", []string{"-device", "virtio-pmem,id=p"}, nil, "'file' is missing for 'virtio-pmem'"},
		{"bad bool", []string{"-device", "virtio-pmem,id=p,file=/a,readonly=maybe"}, nil, "unable to parse 'maybe' for 'readonly'"},
		{"vsock key", []string{"-device", "virtio-pmem,id=p,file=/a,guest-cid=3"}, nil, "-device: invalid parameter 'guest-cid'"},
		{"pmem key on vsock", []string{"-device", "vsock,id=v,guest-cid=3,file=/a"}, nil, "-device: invalid parameter 'file'"},
	} {
		c, _, err := Parse(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(c.Pmems) != len(tc.pmems) {
			t.Fatalf("%s: pmems %+v, want %+v", tc.name, c.Pmems, tc.pmems)
		}
		for i := range c.Pmems {
			if c.Pmems[i] != tc.pmems[i] {
				t.Errorf("%s: pmem %d %+v, want %+v", tc.name, i, c.Pmems[i], tc.pmems[i])
			}
		}
	}
}
