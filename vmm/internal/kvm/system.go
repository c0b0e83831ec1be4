package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// APIVersion is the only KVM API version this package speaks.
const APIVersion = 12

// DevicePath is the default KVM device node.
const DevicePath = "/dev/kvm"

// ErrClosed is returned by methods on a closed handle.
var ErrClosed = errors.New("kvm: handle closed")

// System is an open /dev/kvm.
type System struct {
	fd int
}

// Open opens /dev/kvm (or path when non-empty) and checks the API version.
func Open(path string) (*System, error) {
	if path == "" {
		path = DevicePath
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &System{fd: fd}
	v, err := ioctlVal(fd, kvmGetAPIVersion, 0)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("kvm: API version %d, want %d", v, APIVersion)
	}
	return s, nil
}

// Fd returns the /dev/kvm descriptor.
func (s *System) Fd() int { return s.fd }

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// CheckExtension returns KVM_CHECK_EXTENSION's answer for c: 0 when
// unsupported, otherwise 1 or a capability-specific value.
func (s *System) CheckExtension(c Cap) (int, error) {
	r, err := ioctlVal(s.fd, kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("KVM_CHECK_EXTENSION(%v): %w", c, err)
	}
	return int(r), nil
}

// RequireCaps fails with an error naming the first missing capability.
// With no arguments it checks RequiredCaps.
func (s *System) RequireCaps(caps ...Cap) error {
	if len(caps) == 0 {
		caps = RequiredCaps
	}
	for _, c := range caps {
		v, err := s.CheckExtension(c)
		if err != nil {
			return err
		}
		if v == 0 {
			return fmt.Errorf("kvm: required capability %v (%d) is not supported by this host", c, int(c))
		}
	}
	return nil
}

// VCPUMmapSize returns the size of the per-vCPU kvm_run mapping.
func (s *System) VCPUMmapSize() (int, error) {
	r, err := ioctlVal(s.fd, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	if r < runHeaderSize {
		return 0, fmt.Errorf("kvm: vcpu mmap size %d smaller than kvm_run header", r)
	}
	return int(r), nil
}

// CreateVM creates a VM. The VM keeps its own reference to the mmap size;
// the System may be closed afterwards.
func (s *System) CreateVM() (*VM, error) {
	size, err := s.VCPUMmapSize()
	if err != nil {
		return nil, err
	}
	fd, err := ioctlVal(s.fd, kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	unix.CloseOnExec(int(fd))
	return &VM{fd: int(fd), mmapSize: size}, nil
}
