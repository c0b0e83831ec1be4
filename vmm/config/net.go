package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Limits for NICs, consoles and the entropy device from the StratoVirt
// specification ("Number of VM NICs (including hot plugged-in NICs): [0,
// 2]") and its LTS parser (tap names ≤ 15 characters, rng
// bytes_per_sec 64..1000000000).
const (
	MaxNets          = 2
	MaxTapNameLen    = 15
	MaxSocketPathLen = 107 // sun_path less the NUL
	MinRNGRate       = 64
	MaxRNGRate       = 1000000000
)

// Net is one virtio-net NIC (-netdev id=ID,netdev=TAP[,mac=MAC]
// [,iothread=T][,fds=FD]); the JSON keys are those of StratoVirt's "net"
// array. The tap is named (attached to, or created) or given as an open
// descriptor; the name wins when both are set, as in StratoVirt.
type Net struct {
	ID      string `json:"iface_id"`
	TapName string `json:"host_dev_name,omitempty"`
	// MAC is xx:xx:xx:xx:xx:xx; empty means a random locally
	// administered address.
	MAC string `json:"mac,omitempty"`
	// TapFD is an attached tap descriptor (IFF_TAP|IFF_NO_PI|
	// IFF_VNET_HDR) inherited by the VMM, for example from the
	// containerd shim which opens the tap in the pod's network namespace;
	// 0 means none (descriptor 0 is never a tap).
	TapFD    int    `json:"tap_fd,omitempty"`
	IOThread string `json:"iothread,omitempty"`
	// VhostType is NetVhostKernel (-netdev ...,vhost=on) to have the
	// host kernel's vhost-net move the frames, or "" for the VMM's own
	// backend. StratoVirt's "vhost-user" is not supported.
	VhostType string `json:"vhost_type,omitempty"`
}

// NetVhostKernel is the vhost_type of a NIC served by vhost-net.
const NetVhostKernel = "vhost-kernel"

// Console is one virtio-console (-chardev id=ID,path=SOCKET): a listening
// unix socket for one client at a time; the file must not exist.
type Console struct {
	ID         string `json:"console_id"`
	SocketPath string `json:"socket_path"`
}

// RNG is the virtio-rng entropy device (-rng; JSON "rng", StratoVirt
// LTS v0.3's keys). An empty RandomFile means the host's getrandom.
type RNG struct {
	RandomFile  string `json:"random_file,omitempty"`
	BytesPerSec uint64 `json:"bytes_per_sec,omitempty"`
}

// ParseMAC parses xx:xx:xx:xx:xx:xx (exactly 17 characters, hex digits
// in either case). Multicast and all-zero addresses are refused.
func ParseMAC(s string) ([6]byte, error) {
	var m [6]byte
	parts := strings.Split(s, ":")
	if len(s) != 17 || len(parts) != 6 {
		return m, fmt.Errorf("mac address %q is illegal (want xx:xx:xx:xx:xx:xx)", s)
	}
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil || len(p) != 2 {
			return m, fmt.Errorf("mac address %q is illegal (want xx:xx:xx:xx:xx:xx)", s)
		}
		m[i] = byte(v)
	}
	if m[0]&1 != 0 {
		return m, fmt.Errorf("mac address %q is a multicast address", s)
	}
	if m == ([6]byte{}) {
		return m, fmt.Errorf("mac address %q is all zeroes", s)
	}
	return m, nil
}

// validateNets checks NICs, consoles and the rng; Validate calls it.
func (c *VMConfig) validateNets() []error {
	var errs []error
	threads := make(map[string]bool, len(c.IOThreads))
	for _, t := range c.IOThreads {
		threads[t.ID] = true
	}
	add := func(e *Error) { errs = append(errs, e) }

	if n := len(c.Nets); n > MaxNets {
		add(errorf("-netdev", "net", "NIC number %d out of range [0, %d]", n, MaxNets))
	}
	ids := make(map[string]bool, len(c.Nets))
	for i, n := range c.Nets {
		f := func(key string) string { return fmt.Sprintf("net[%d].%s", i, key) }
		switch {
		case n.ID == "":
			add(errorf("-netdev", f("iface_id"), "'id' is missing"))
		case len(n.ID) > MaxIDLen:
			add(errorf("-netdev", f("iface_id"), "id length %d out of range [1, %d]", len(n.ID), MaxIDLen))
		case ids[n.ID]:
			add(errorf("-netdev", f("iface_id"), "id %q is given more than once", n.ID))
		}
		ids[n.ID] = true
		switch {
		case n.TapName == "" && n.TapFD == 0:
			add(errorf("-netdev", f("host_dev_name"), "netdev %q: 'netdev' (tap name) or 'fds' is missing", n.ID))
		case len(n.TapName) > MaxTapNameLen:
			add(errorf("-netdev", f("host_dev_name"), "netdev %q: tap name length %d out of range [1, %d]", n.ID, len(n.TapName), MaxTapNameLen))
		case strings.ContainsAny(n.TapName, "/ \t\n:") || n.TapName == "." || n.TapName == "..":
			add(errorf("-netdev", f("host_dev_name"), "netdev %q: tap name %q is not a valid interface name", n.ID, n.TapName))
		case n.TapFD < 0:
			add(errorf("-netdev", f("tap_fd"), "netdev %q: tap fd %d is negative", n.ID, n.TapFD))
		}
		if n.MAC != "" {
			if _, err := ParseMAC(n.MAC); err != nil {
				add(errorf("-netdev", f("mac"), "netdev %q: %v", n.ID, err))
			}
		}
		if n.IOThread != "" && !threads[n.IOThread] {
			add(errorf("-netdev", f("iothread"), "netdev %q: iothread %q is not configured (add -iothread id=%s)", n.ID, n.IOThread, n.IOThread))
		}
		if n.VhostType != "" && n.VhostType != NetVhostKernel {
			add(errorf("-netdev", f("vhost_type"), "netdev %q: vhost_type %q is not supported (%q, or none for the VMM's own backend)", n.ID, n.VhostType, NetVhostKernel))
		}
	}

	cids := make(map[string]bool, len(c.Consoles))
	paths := make(map[string]bool, len(c.Consoles))
	for i, k := range c.Consoles {
		f := func(key string) string { return fmt.Sprintf("console[%d].%s", i, key) }
		switch {
		case k.ID == "":
			add(errorf("-chardev", f("console_id"), "'id' is missing"))
		case len(k.ID) > MaxIDLen:
			add(errorf("-chardev", f("console_id"), "id length %d out of range [1, %d]", len(k.ID), MaxIDLen))
		case cids[k.ID]:
			add(errorf("-chardev", f("console_id"), "id %q is given more than once", k.ID))
		}
		cids[k.ID] = true
		switch p := k.SocketPath; {
		case p == "":
			add(errorf("-chardev", f("socket_path"), "chardev %q: 'path' is missing", k.ID))
		case len(p) > MaxSocketPathLen:
			add(errorf("-chardev", f("socket_path"), "chardev %q: socket path length %d out of range [1, %d]", k.ID, len(p), MaxSocketPathLen))
		case paths[p]:
			add(errorf("-chardev", f("socket_path"), "chardev %q: socket path %q is given more than once", k.ID, p))
		default:
			if _, err := os.Lstat(p); err == nil {
				add(errorf("-chardev", f("socket_path"), "chardev %q: socket file %q already exists (remove it first)", k.ID, p))
			}
		}
		paths[k.SocketPath] = true
	}

	if r := c.RNG; r != nil {
		if r.BytesPerSec != 0 && (r.BytesPerSec < MinRNGRate || r.BytesPerSec > MaxRNGRate) {
			add(errorf("-rng", "rng.bytes_per_sec", "bytes_per_sec %d out of range [%d, %d]", r.BytesPerSec, MinRNGRate, MaxRNGRate))
		}
		if r.RandomFile != "" {
			fi, err := os.Stat(r.RandomFile)
			switch {
			case err != nil:
				add(errorf("-rng", "rng.random_file", "random file %q: %v", r.RandomFile, unwrapPath(err)))
			case !fi.Mode().IsRegular() && fi.Mode()&os.ModeCharDevice == 0:
				add(errorf("-rng", "rng.random_file", "random file %q is neither a character device nor a regular file", r.RandomFile))
			}
		}
	}
	return errs
}
