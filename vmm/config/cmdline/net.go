package cmdline

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

// parseNetdev handles the seed's -netdev id=ID,netdev=TAP[,mac=MAC]
// [,iothread=T] plus StratoVirt LTS's fds=FD (an inherited tap
// descriptor) and, for StratoVirt 2.x command lines, a leading "tap",
// ifname= as netdev= and fd= as fds=. vhost=on has the host kernel's
// vhost-net serve the NIC. Validate checks the MAC, lengths and the iothread.
func parseNetdev(v string) (config.Net, error) {
	kv, err := parseSubOptions("-netdev", v, "type", "type", "id", "netdev", "ifname", "mac", "iothread", "fds", "fd", "vhost")
	if err != nil {
		return config.Net{}, err
	}
	if t, ok := kv["type"]; ok && t != "tap" {
		return config.Net{}, fmt.Errorf("-netdev: type '%s' is not supported (tap only)", t)
	}
	n := config.Net{ID: kv["id"], MAC: kv["mac"], IOThread: kv["iothread"]}
	if _, ok := kv["id"]; !ok {
		return n, errors.New("-netdev: 'id' is missing for 'netdev' device")
	}
	for _, alias := range [][2]string{{"netdev", "ifname"}, {"fds", "fd"}} {
		a, aok := kv[alias[0]]
		b, bok := kv[alias[1]]
		if aok && bok {
			return n, fmt.Errorf("-netdev: '%s' and '%s' are the same setting", alias[0], alias[1])
		}
		if bok {
			kv[alias[0]] = b
		} else if aok {
			kv[alias[0]] = a
		}
	}
	n.TapName = kv["netdev"]
	if s, ok := kv["fds"]; ok {
		fd, err := strconv.ParseUint(s, 10, 31)
		if err != nil || fd == 0 {
			return n, fmt.Errorf("-netdev: unable to parse '%s' for 'fds' (a descriptor number above 0)", s)
		}
		n.TapFD = int(fd)
	}
	if n.TapName == "" && n.TapFD == 0 {
		return n, errors.New("-netdev: 'netdev' is missing for 'netdev' device (the tap name, or fds=<fd>)")
	}
	if s, ok := kv["vhost"]; ok {
		b, err := parseBool(s)
		if err != nil {
			return n, fmt.Errorf("-netdev: unable to parse '%s' for 'vhost' (on|off)", s)
		}
		if b {
			n.VhostType = config.NetVhostKernel
		}
	}
	return n, nil
}

// parseChardev handles -chardev id=ID,path=SOCKET (the seed's virtio
// console). A StratoVirt 2.x style "socket" type and its "server" and
// "nowait" flags are accepted and ignored: the console always listens.
func parseChardev(v string) (config.Console, error) {
	var items []string
	for i, item := range strings.Split(v, ",") {
		if item == "server" || item == "nowait" || (i == 0 && item == "socket") {
			continue
		}
		items = append(items, item)
	}
	kv, err := parseSubOptions("-chardev", strings.Join(items, ","), "", "id", "path")
	if err != nil {
		return config.Console{}, err
	}
	k := config.Console{ID: kv["id"], SocketPath: kv["path"]}
	if _, ok := kv["id"]; !ok {
		return k, errors.New("-chardev: 'id' is missing for 'chardev' device")
	}
	if _, ok := kv["path"]; !ok {
		return k, errors.New("-chardev: 'path' is missing for 'chardev' device")
	}
	return k, nil
}

// parseRNG handles -rng random_file=PATH[,bytes_per_sec=N] (StratoVirt
// LTS v0.3) and -rng getrandom[,bytes_per_sec=N], which uses the host's
// getrandom without a file.
func parseRNG(c *config.VMConfig, v string) error {
	kv, err := parseSubOptions("-rng", v, "source", "source", "random_file", "bytes_per_sec")
	if err != nil {
		return err
	}
	r := &config.RNG{RandomFile: kv["random_file"]}
	if s, ok := kv["source"]; ok {
		if s != "getrandom" {
			return fmt.Errorf("-rng: invalid parameter '%s' (random_file=<path> or getrandom)", s)
		}
		if r.RandomFile != "" {
			return errors.New("-rng: getrandom and random_file are exclusive")
		}
	}
	if s, ok := kv["bytes_per_sec"]; ok {
		n, err := strconv.ParseUint(s, 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			n, err = math.MaxUint64, nil
		}
		if err != nil {
			return fmt.Errorf("-rng: unable to parse '%s' for 'bytes_per_sec'", s)
		}
		r.BytesPerSec = n
	}
	if _, ok := kv["source"]; !ok && r.RandomFile == "" {
		return errors.New("-rng: 'random_file' is missing (random_file=<path>, or getrandom)")
	}
	c.RNG = r
	return nil
}
