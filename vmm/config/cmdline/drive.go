package cmdline

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

// applyRepeated handles one occurrence of an option that may be given
// many times (-drive, -iothread); each appends to its list in order.
func applyRepeated(c *config.VMConfig, opt, v string) error {
	switch opt {
	case "-drive":
		d, err := parseDrive(v)
		if err != nil {
			return err
		}
		c.Drives = append(c.Drives, d)
	case "-iothread":
		t, err := parseIOThread(v)
		if err != nil {
			return err
		}
		c.IOThreads = append(c.IOThreads, t)
	case "-netdev":
		n, err := parseNetdev(v)
		if err != nil {
			return err
		}
		c.Nets = append(c.Nets, n)
	case "-chardev":
		k, err := parseChardev(v)
		if err != nil {
			return err
		}
		c.Consoles = append(c.Consoles, k)
	}
	return nil
}

// parseDrive handles -drive id=ID,file=PATH[,readonly=on|off]
// [,direct=on|off][,serial=S][,iothread=T][,iops=N] (keys in any order).
// Limits (serial length, iops range, iothread existence) are checked by
// Validate.
func parseDrive(v string) (config.Drive, error) {
	kv, err := parseSubOptions("-drive", v, "", "id", "file", "readonly", "direct", "serial", "iothread", "iops")
	if err != nil {
		return config.Drive{}, err
	}
	d := config.DefaultDrive(kv["id"], kv["file"])
	if _, ok := kv["file"]; !ok {
		return d, errors.New("-drive: 'file' is missing for 'drive' device")
	}
	if _, ok := kv["id"]; !ok {
		return d, errors.New("-drive: 'id' is missing for 'drive' device")
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{{"readonly", &d.ReadOnly}, {"direct", &d.Direct}} {
		s, ok := kv[f.key]
		if !ok {
			continue
		}
		b, err := parseBool(s)
		if err != nil {
			return d, fmt.Errorf("-drive: unable to parse '%s' for '%s' (on|off)", s, f.key)
		}
		*f.dst = b
	}
	d.Serial = kv["serial"]
	d.IOThread = kv["iothread"]
	if s, ok := kv["iops"]; ok {
		n, err := strconv.ParseUint(s, 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			n, err = math.MaxUint64, nil
		}
		if err != nil {
			return d, fmt.Errorf("-drive: unable to parse '%s' for 'iops'", s)
		}
		d.IOPS = n
	}
	return d, nil
}

// parseIOThread handles -iothread id=NAME.
func parseIOThread(v string) (config.IOThread, error) {
	kv, err := parseSubOptions("-iothread", v, "", "id")
	if err != nil {
		return config.IOThread{}, err
	}
	id, ok := kv["id"]
	if !ok {
		return config.IOThread{}, errors.New("-iothread: 'id' is missing")
	}
	return config.IOThread{ID: id}, nil
}
