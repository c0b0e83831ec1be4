package kvm

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxCPUIDEntries bounds how far SupportedCPUID grows its buffer.
const maxCPUIDEntries = 4096

// flex allocates one 8-byte-aligned buffer holding a kernel flexible-array
// struct: an 8-byte header whose first u32 is the entry count, followed by
// n entries of T. It returns the count field, the entries and the buffer
// start.
func flex[T any](n int) (*uint32, []T, unsafe.Pointer) {
	size := 8 + n*int(unsafe.Sizeof(*new(T)))
	words := (size + 7) / 8
	if words < 2 {
		words = 2
	}
	buf := make([]uint64, words)
	p := unsafe.Pointer(&buf[0])
	entries := unsafe.Slice((*T)(unsafe.Pointer(&buf[1])), n)
	return (*uint32)(p), entries, p
}

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID, growing the buffer while
// the kernel answers E2BIG.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	for n := 256; n <= maxCPUIDEntries; n *= 2 {
		nent, entries, p := flex[CPUIDEntry](n)
		*nent = uint32(n)
		_, err := ioctlPtr(s.fd, kvmGetSupportedCPUID, p)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		got := int(*nent)
		if got > n {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: kernel returned %d entries for a buffer of %d", got, n)
		}
		return append([]CPUIDEntry(nil), entries[:got]...), nil
	}
	return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: more than %d entries", maxCPUIDEntries)
}

// SetCPUID2 sets the vCPU's CPUID table (KVM_SET_CPUID2).
func (v *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	nent, buf, p := flex[CPUIDEntry](len(entries))
	*nent = uint32(len(entries))
	copy(buf, entries)
	if _, err := ioctlPtr(v.fd, kvmSetCPUID2, p); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_CPUID2 (%d entries): %w", v.id, len(entries), err)
	}
	return nil
}

// GetMSRs reads the MSRs named by entries[i].Index into entries[i].Data.
// It fails, naming the MSR, if the kernel reads fewer than asked.
func (v *VCPU) GetMSRs(entries []MSREntry) error {
	n, buf, p := flex[MSREntry](len(entries))
	*n = uint32(len(entries))
	copy(buf, entries)
	r, err := ioctlPtr(v.fd, kvmGetMSRs, p)
	if err != nil {
		return fmt.Errorf("vcpu %d: KVM_GET_MSRS: %w", v.id, err)
	}
	if int(r) != len(entries) {
		return fmt.Errorf("vcpu %d: KVM_GET_MSRS read %d of %d MSRs; MSR %#x failed", v.id, r, len(entries), msrAt(entries, int(r)))
	}
	copy(entries, buf)
	return nil
}

// SetMSRs writes the MSRs. It fails, naming the MSR, if the kernel sets
// fewer than asked.
func (v *VCPU) SetMSRs(entries []MSREntry) error {
	n, buf, p := flex[MSREntry](len(entries))
	*n = uint32(len(entries))
	copy(buf, entries)
	r, err := ioctlPtr(v.fd, kvmSetMSRs, p)
	if err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_MSRS: %w", v.id, err)
	}
	if int(r) != len(entries) {
		return fmt.Errorf("vcpu %d: KVM_SET_MSRS set %d of %d MSRs; MSR %#x was refused", v.id, r, len(entries), msrAt(entries, int(r)))
	}
	return nil
}

func msrAt(entries []MSREntry, i int) uint32 {
	if i >= 0 && i < len(entries) {
		return entries[i].Index
	}
	return 0
}
