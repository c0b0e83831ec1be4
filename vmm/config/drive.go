package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Limits for disks and iothreads from the StratoVirt specification
// ("Number of VM disks (including hot plugged-in disks): [0, 6]", "The
// value range of IOPS is [0, 1000000]", "A maximum of eight iothreads can
// be configured", "On the x86_64 platform, a maximum of 11 MMIO devices
// can be configured") and its LTS parser (serial ≤ 20 characters, ids ≤
// 255 characters).
const (
	MaxDrives      = 6
	MaxIOPS        = 1000000
	MaxSerialLen   = 20
	MaxIDLen       = 255
	MaxIOThreads   = 8
	MaxMMIODevices = 11
)

// Drive is one virtio-blk disk (-drive id=ID,file=PATH[,readonly=on|off]
// [,direct=on|off][,serial=S][,iothread=T][,iops=N]). The JSON keys are
// those of StratoVirt's "drive" array.
type Drive struct {
	ID       string `json:"drive_id"`
	File     string `json:"path_on_host"`
	ReadOnly bool   `json:"read_only"`
	// Direct opens the file with O_DIRECT; StratoVirt's default is on.
	Direct   bool   `json:"direct"`
	Serial   string `json:"serial_num,omitempty"`
	IOThread string `json:"iothread,omitempty"`
	// IOPS limits the average request rate; 0 means unlimited.
	IOPS uint64 `json:"iops,omitempty"`
	// Backing makes File a sparse overlay of the same size as the
	// read-only image Backing: the guest's writes go to File in 4 KiB
	// clusters, and clusters the guest never wrote read from Backing.
	// File must hold no data when the disk is opened (the record of
	// written clusters lives in the VMM's memory only), and the drive
	// must be writable and buffered (ReadOnly and Direct false). Go API
	// only: StratoVirt's command line and JSON have no such key.
	Backing string `json:"-"`
}

// DefaultDrive returns a Drive with StratoVirt's defaults (read-write,
// direct on) for the given id and file.
func DefaultDrive(id, file string) Drive {
	return Drive{ID: id, File: file, Direct: true}
}

// UnmarshalJSON applies StratoVirt's defaults (direct on) to keys the JSON
// object leaves out.
func (d *Drive) UnmarshalJSON(b []byte) error {
	type plain Drive
	p := plain(DefaultDrive("", ""))
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*d = Drive(p)
	return nil
}

// IOThread is one named I/O event-loop thread (-iothread id=NAME).
type IOThread struct {
	ID string `json:"id"`
}

// mmioDeviceCount is how many virtio-mmio devices the config asks for.
// Other device kinds (net, vsock, console, balloon, rng) add theirs here.
func (c *VMConfig) mmioDeviceCount() int {
	n := len(c.Drives) + len(c.Nets) + len(c.Consoles) + len(c.Pmems)
	if c.RNG != nil {
		n++
	}
	if c.Vsock != nil {
		n++
	}
	if c.Balloon != nil {
		n++
	}
	return n
}

// validateDrives checks the drives and iothreads; it is called by
// Validate.
func (c *VMConfig) validateDrives() []error {
	var errs []error
	add := func(e *Error) { errs = append(errs, e) }

	if n := len(c.IOThreads); n > MaxIOThreads {
		add(errorf("-iothread", "iothread", "iothread number %d out of range [0, %d]", n, MaxIOThreads))
	}
	threads := make(map[string]bool, len(c.IOThreads))
	for i, t := range c.IOThreads {
		field := fmt.Sprintf("iothread[%d].id", i)
		switch {
		case t.ID == "":
			add(errorf("-iothread", field, "id is required"))
		case len(t.ID) > MaxIDLen:
			add(errorf("-iothread", field, "id length %d out of range [1, %d]", len(t.ID), MaxIDLen))
		case threads[t.ID]:
			add(errorf("-iothread", field, "id %q is given more than once", t.ID))
		}
		threads[t.ID] = true
	}

	if n := len(c.Drives); n > MaxDrives {
		add(errorf("-drive", "drive", "disk number %d out of range [0, %d]", n, MaxDrives))
	}
	ids := make(map[string]bool, len(c.Drives))
	for i, d := range c.Drives {
		f := func(key string) string { return fmt.Sprintf("drive[%d].%s", i, key) }
		switch {
		case d.ID == "":
			add(errorf("-drive", f("drive_id"), "'id' is missing"))
		case len(d.ID) > MaxIDLen:
			add(errorf("-drive", f("drive_id"), "id length %d out of range [1, %d]", len(d.ID), MaxIDLen))
		case ids[d.ID]:
			add(errorf("-drive", f("drive_id"), "id %q is given more than once", d.ID))
		}
		ids[d.ID] = true
		if d.File == "" {
			add(errorf("-drive", f("path_on_host"), "drive %q: 'file' is missing", d.ID))
		} else if e := checkDisk(f("path_on_host"), d); e != nil {
			add(e)
		}
		if len(d.Serial) > MaxSerialLen {
			add(errorf("-drive", f("serial_num"), "drive %q: serial length %d out of range [0, %d]", d.ID, len(d.Serial), MaxSerialLen))
		}
		if d.IOPS > MaxIOPS {
			add(errorf("-drive", f("iops"), "drive %q: iops %d out of range [0, %d]", d.ID, d.IOPS, MaxIOPS))
		}
		if d.IOThread != "" && !threads[d.IOThread] {
			add(errorf("-drive", f("iothread"), "drive %q: iothread %q is not configured (add -iothread id=%s)", d.ID, d.IOThread, d.IOThread))
		}
		if d.Backing != "" {
			if d.ReadOnly || d.Direct {
				add(errorf("-drive", f("backing"), "drive %q: a backing image needs a writable, buffered drive (readonly=off, direct=off)", d.ID))
			}
			if e := checkBacking(f("backing"), d); e != nil {
				add(e)
			}
		}
	}
	if n := c.mmioDeviceCount(); n > MaxMMIODevices {
		add(errorf("-drive", "", "%d virtio-mmio devices out of range [0, %d] on x86_64", n, MaxMMIODevices))
	}
	return errs
}

// checkBacking verifies that a drive's backing image is a readable
// regular file of the same size as the drive's file, which must be a
// regular file too.
func checkBacking(field string, d Drive) *Error {
	path := d.Backing
	if e := checkFile("-drive", field, "backing image", path); e != nil {
		e.Msg = fmt.Sprintf("drive %q: %s", d.ID, e.Msg)
		return e
	}
	base, err := os.Stat(path)
	if err != nil {
		return errorf("-drive", field, "drive %q: backing image %q: %v", d.ID, path, unwrapPath(err))
	}
	overlay, err := os.Stat(d.File)
	if err != nil {
		return nil // checkDisk reports it
	}
	if !overlay.Mode().IsRegular() {
		return errorf("-drive", field, "drive %q: file %q is not a regular file, so it cannot overlay backing image %q", d.ID, d.File, path)
	}
	if overlay.Size() != base.Size() {
		return errorf("-drive", field, "drive %q: file %q is %d bytes, backing image %q is %d bytes: they must be the same size",
			d.ID, d.File, overlay.Size(), path, base.Size())
	}
	return nil
}

// checkDisk verifies that a drive's file is a regular file or a block
// device that can be opened with the access the drive asks for.
func checkDisk(field string, d Drive) *Error {
	path := d.File
	if len(path) > MaxPathLen {
		return errorf("-drive", field, "drive %q: path length %d out of range [1, %d]", d.ID, len(path), MaxPathLen)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return errorf("-drive", field, "drive %q: file %q: %v", d.ID, path, unwrapPath(err))
	}
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		return errorf("-drive", field, "drive %q: file %q is neither a regular file nor a block device", d.ID, path)
	}
	flag := os.O_RDWR
	if d.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		what := "readable and writable"
		if d.ReadOnly {
			what = "readable"
		}
		if errors.Is(err, os.ErrPermission) {
			return errorf("-drive", field, "drive %q: file %q is not %s", d.ID, path, what)
		}
		return errorf("-drive", field, "drive %q: file %q: %v", d.ID, path, unwrapPath(err))
	}
	_ = f.Close()
	return nil
}
