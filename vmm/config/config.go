// Package config owns VMConfig, the single description of a virtual machine
// that the native command line (package cmdline), the JSON config file and
// the containerd shim all fill, and its validation. Validate is the one place
// where limits are enforced; the builder may assume a validated VMConfig.
// The package does no I/O except checking that files named by the config
// exist and are readable. VMConfig is a plain value with no locking: it is
// filled by one goroutine and then handed over.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Limits from the StratoVirt specification ("Number of VM CPUs: [1, 254]",
// "VM memory size: [256 MB, 512 GB]", VM name "a string of 1 to 255
// characters").
const (
	MinVCPUs   = 1
	MaxVCPUs   = 254
	MinMemSize = 256 << 20
	MaxMemSize = 512 << 30
	// MemAlign: memory sizes are whole MiB (StratoVirt rejects "Input value
	// 1024 is unaligned with 1048576 for memory").
	MemAlign   = 1 << 20
	MaxNameLen = 255
	// MaxPathLen bounds file paths (Linux PATH_MAX).
	MaxPathLen = 4096
)

// MachineTypeMicroVM is the only machine type; it is matched
// case-insensitively.
const MachineTypeMicroVM = "MicroVm"

// Defaults used when an option is not given.
const (
	DefaultName    = "StratoVirt"
	DefaultVCPUs   = 1
	DefaultMemSize = 256 << 20
)

// VMConfig describes one VM. The JSON tags follow StratoVirt's -config file
// ("boot-source", "machine-config", "serial"); the name has no JSON key.
// Later issues add drives, NICs, vsock and so on as further fields.
type VMConfig struct {
	Name    string  `json:"-"`
	Machine Machine `json:"machine-config"`
	Boot    Boot    `json:"boot-source"`
	Serial  Serial  `json:"serial"`
	// Drives are the virtio-blk disks in attach order (the first is
	// /dev/vda); IOThreads the named I/O threads they may use (drive.go).
	Drives    []Drive    `json:"drive,omitempty"`
	IOThreads []IOThread `json:"iothread,omitempty"`
	// Nets are the virtio-net NICs, Consoles the virtio-consoles and RNG
	// the optional entropy device (net.go).
	Nets     []Net     `json:"net,omitempty"`
	Consoles []Console `json:"console,omitempty"`
	RNG      *RNG      `json:"rng,omitempty"`
	// Vsock is the vsock device and Balloon the memory balloon
	// (vsock.go, balloon.go).
	Vsock   *Vsock   `json:"vsock,omitempty"`
	Balloon *Balloon `json:"balloon,omitempty"`
	// Pmems are the virtio-pmem devices (pmem.go), attached after the
	// other devices; the shim's only.
	Pmems []Pmem `json:"-"`
	// Hotplug sets how many empty hot-replaceable disk and NIC slots
	// the VM gets; nil means the default (hotplug.go).
	Hotplug *Hotplug `json:"-"`
	// Process holds VMM process settings (QMP socket, daemonize, pid
	// file, log, seccomp); command line only (process.go).
	Process Process `json:"-"`
}

// Machine is the machine type, CPUs and memory (-machine, -smp, -m).
type Machine struct {
	Type          string `json:"type"`
	VCPUs         int    `json:"vcpu_count"`
	MemSize       uint64 `json:"mem_size"` // bytes
	DumpGuestCore bool   `json:"dump_guest_core"`
	MemShare      bool   `json:"mem_share"`
	// MemPath backs RAM with a file: a new unlinked file in a directory
	// (hugetlbfs typically) or the named file (-mem-path); process.go.
	MemPath string `json:"mem_path,omitempty"`
	// MemMerge offers guest RAM to the host's kernel same-page merging
	// (KSM; QEMU's mem-merge). Not a StratoVirt option, so neither its
	// command line nor its JSON sets it: the shim's mem_merge does.
	MemMerge bool `json:"-"`
}

// Boot is the kernel, initrd and kernel command line (-kernel, -initrd,
// -append).
type Boot struct {
	Kernel  string `json:"kernel_image_path"`
	Initrd  string `json:"initrd_fs_path,omitempty"`
	Cmdline string `json:"boot_args"`
}

// Serial configures the legacy UART (-serial stdio). Without Stdio the VM
// has no UART at all.
type Serial struct {
	Stdio bool `json:"stdio"`
}

// Default returns the configuration StratoVirt uses for options that are not
// given: name "StratoVirt", machine MicroVm with guest core dumps on and
// memory sharing off, 1 vCPU, 256 MiB.
func Default() VMConfig {
	return VMConfig{
		Name: DefaultName,
		Machine: Machine{
			Type:          MachineTypeMicroVM,
			VCPUs:         DefaultVCPUs,
			MemSize:       DefaultMemSize,
			DumpGuestCore: true,
		},
	}
}

// Error is one invalid setting. Option is the command-line option and Field
// the JSON key it corresponds to (empty where there is none); Error() is a
// single line starting with Option.
type Error struct {
	Option string
	Field  string
	Msg    string
}

func (e *Error) Error() string { return e.Option + ": " + e.Msg }

func errorf(option, field, format string, args ...any) *Error {
	return &Error{Option: option, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// VCPUsRangeError is the error for a CPU count outside [MinVCPUs, MaxVCPUs];
// value is the count as the user wrote it.
func VCPUsRangeError(value string) *Error {
	return errorf("-smp", "machine-config.vcpu_count", "cpus %s out of range [%d, %d]", value, MinVCPUs, MaxVCPUs)
}

// MemSizeRangeError is the error for a memory size outside [MinMemSize,
// MaxMemSize]; value is the size in bytes as text.
func MemSizeRangeError(value string) *Error {
	return errorf("-m", "machine-config.mem_size", "memory size %s bytes out of range [%d, %d] (256 MiB to 512 GiB)",
		value, uint64(MinMemSize), uint64(MaxMemSize))
}

// IsMicroVM reports whether t names the microVM machine type (the empty
// string means the default, which is MicroVm).
func IsMicroVM(t string) bool {
	return t == "" || strings.EqualFold(t, MachineTypeMicroVM)
}

// Validate checks every setting against StratoVirt's limits and that the
// kernel (and initrd, if set) are readable regular files. It returns nil or
// all problems joined; each is an *Error whose text is one line naming the
// option and the allowed range.
func (c *VMConfig) Validate() error {
	var errs []error
	add := func(e *Error) { errs = append(errs, e) }

	if n := len(c.Name); n < 1 || n > MaxNameLen {
		add(errorf("-name", "", "name length %d out of range [1, %d]", n, MaxNameLen))
	}
	if !IsMicroVM(c.Machine.Type) {
		add(errorf("-machine", "machine-config.type", "type %q is not supported (supported: %s)", c.Machine.Type, MachineTypeMicroVM))
	}
	if v := c.Machine.VCPUs; v < MinVCPUs || v > MaxVCPUs {
		add(VCPUsRangeError(fmt.Sprint(v)))
	}
	switch m := c.Machine.MemSize; {
	case m < MinMemSize || m > MaxMemSize:
		add(MemSizeRangeError(fmt.Sprint(m)))
	case m%MemAlign != 0:
		add(errorf("-m", "machine-config.mem_size", "memory size %d bytes is not a multiple of 1 MiB (%d)", m, MemAlign))
	}
	if c.Boot.Kernel == "" {
		add(errorf("-kernel", "boot-source.kernel_image_path", "a kernel image is required"))
	} else if e := checkFile("-kernel", "boot-source.kernel_image_path", "kernel image", c.Boot.Kernel); e != nil {
		add(e)
	}
	if c.Boot.Initrd != "" {
		if e := checkFile("-initrd", "boot-source.initrd_fs_path", "initrd", c.Boot.Initrd); e != nil {
			add(e)
		}
	}
	errs = append(errs, c.validateDrives()...)
	errs = append(errs, c.validateNets()...)
	errs = append(errs, c.validateVsock()...)
	errs = append(errs, c.validateBalloon()...)
	errs = append(errs, c.validatePmems()...)
	errs = append(errs, c.validateProcess()...)
	errs = append(errs, c.validateHotplug()...)
	return errors.Join(errs...)
}

// checkFile verifies that path is a readable regular file.
func checkFile(option, field, what, path string) *Error {
	if len(path) > MaxPathLen {
		return errorf(option, field, "%s path length %d out of range [1, %d]", what, len(path), MaxPathLen)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return errorf(option, field, "%s %q: %v", what, path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return errorf(option, field, "%s %q is not a regular file", what, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return errorf(option, field, "%s %q is not readable: %v", what, path, unwrapPath(err))
	}
	_ = f.Close()
	return nil
}

// unwrapPath drops the *PathError wrapper, whose text repeats the path.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
