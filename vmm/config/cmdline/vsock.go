package cmdline

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

// parseDevice handles -device vsock,id=ID,guest-cid=N[,backend=vhost|unix]
// [,uds-path=PATH]. There may be one vsock (also counting a "vsock"
// section of the -config file). The CID range is checked by Validate.
// Apply hands -device virtio-pmem, which may repeat, to parsePmem before
// it gets here.
func parseDevice(c *config.VMConfig, v string) error {
	kv, err := parseSubOptions("-device", v, "type", "type", "id", "guest-cid", "backend", "uds-path")
	if err != nil {
		return err
	}
	t, ok := kv["type"]
	if !ok {
		return errors.New("-device: the device type is missing (vsock,id=ID,guest-cid=N)")
	}
	if t != "vsock" {
		return fmt.Errorf("-device: unknown device type '%s' (supported: vsock, virtio-pmem)", t)
	}
	if c.Vsock != nil {
		return config.VsockOnce()
	}
	id, ok := kv["id"]
	if !ok {
		return errors.New("-device: 'id' is missing for 'vsock' device")
	}
	s, ok := kv["guest-cid"]
	if !ok {
		return errors.New("-device: 'guest-cid' is missing for 'vsock' device")
	}
	cid, err := strconv.ParseUint(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("-device: vsock guest-cid %s out of range: must be >= %d and < %d", s, config.MinGuestCID, uint64(config.MaxGuestCID))
	}
	if err != nil {
		return fmt.Errorf("-device: unable to parse '%s' for 'guest-cid'", s)
	}
	c.Vsock = &config.Vsock{ID: id, GuestCID: cid, Backend: kv["backend"], UDSPath: kv["uds-path"]}
	return nil
}

// parseBalloon handles -balloon deflate-on-oom=true|false and
// free-page-reporting=true|false (StratoVirt's later option; on|off and
// yes|no are accepted too). A later -balloon or the command line over the
// -config file's "balloon" replaces the setting.
func parseBalloon(c *config.VMConfig, v string) error {
	kv, err := parseSubOptions("-balloon", v, "", "deflate-on-oom", "free-page-reporting")
	if err != nil {
		return err
	}
	b := &config.Balloon{}
	for _, o := range []struct {
		name string
		dst  *bool
	}{{"deflate-on-oom", &b.DeflateOnOOM}, {"free-page-reporting", &b.FreePageReporting}} {
		if s, ok := kv[o.name]; ok {
			if *o.dst, err = parseBool(s); err != nil {
				return fmt.Errorf("-balloon: unable to parse '%s' for '%s' (true|false)", s, o.name)
			}
		}
	}
	c.Balloon = b
	return nil
}

// isPmemDevice reports whether a -device value is a virtio-pmem device.
func isPmemDevice(v string) bool {
	t, _, _ := strings.Cut(v, ",")
	return t == "virtio-pmem" || t == "type=virtio-pmem"
}

// parsePmem handles -device virtio-pmem,id=ID,file=PATH[,readonly=on|off]
// (this implementation's addition to StratoVirt's devices): the file as
// guest persistent memory (/dev/pmemN); read-only keeps the guest's writes
// off the file.
func parsePmem(c *config.VMConfig, v string) error {
	kv, err := parseSubOptions("-device", v, "type", "type", "id", "file", "readonly")
	if err != nil {
		return err
	}
	p := config.Pmem{ID: kv["id"], File: kv["file"]}
	if _, ok := kv["id"]; !ok {
		return errors.New("-device: 'id' is missing for 'virtio-pmem' device")
	}
	if _, ok := kv["file"]; !ok {
		return errors.New("-device: 'file' is missing for 'virtio-pmem' device")
	}
	if s, ok := kv["readonly"]; ok {
		if p.ReadOnly, err = parseBool(s); err != nil {
			return fmt.Errorf("-device: unable to parse '%s' for 'readonly' (on|off)", s)
		}
	}
	c.Pmems = append(c.Pmems, p)
	return nil
}
