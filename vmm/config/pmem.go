package config

import (
	"fmt"
	"os"
)

// MaxPmems bounds the virtio-pmem devices of one VM.
const MaxPmems = 4

// Pmem is a virtio-pmem device: a host file the guest sees as persistent
// memory (/dev/pmemN), -device virtio-pmem,id=ID,file=PATH
// [,readonly=on|off]. StratoVirt's command line has no such device and
// it has no JSON form; the containerd shim uses it for the guest image's
// read-only runc image.
type Pmem struct {
	ID   string `json:"-"`
	File string `json:"-"`
	// ReadOnly keeps the file unchanged: the guest's writes go to pages
	// private to the VM.
	ReadOnly bool `json:"-"`
}

// validatePmems checks the virtio-pmem devices.
func (c *VMConfig) validatePmems() []error {
	var errs []error
	add := func(e *Error) { errs = append(errs, e) }
	const opt = "-device"
	if n := len(c.Pmems); n > MaxPmems {
		add(errorf(opt, "", "virtio-pmem number %d out of range [0, %d]", n, MaxPmems))
	}
	ids := make(map[string]bool, len(c.Pmems))
	for _, p := range c.Pmems {
		switch {
		case p.ID == "":
			add(errorf(opt, "", "virtio-pmem: 'id' is missing"))
		case len(p.ID) > MaxIDLen:
			add(errorf(opt, "", "virtio-pmem id length %d out of range [1, %d]", len(p.ID), MaxIDLen))
		case ids[p.ID]:
			add(errorf(opt, "", "virtio-pmem id %q is given more than once", p.ID))
		}
		ids[p.ID] = true
		if p.File == "" {
			add(errorf(opt, "", "virtio-pmem %q: 'file' is missing", p.ID))
			continue
		}
		if e := checkFile(opt, "", fmt.Sprintf("virtio-pmem %q file", p.ID), p.File); e != nil {
			add(e)
			continue
		}
		if fi, err := os.Stat(p.File); err == nil && fi.Size() == 0 {
			add(errorf(opt, "", "virtio-pmem %q: file %q is empty", p.ID, p.File))
		}
	}
	return errs
}
