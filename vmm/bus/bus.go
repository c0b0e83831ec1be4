// Package bus routes guest port-I/O and MMIO accesses to devices by
// address. A Bus is filled while the VM is built and only read while vCPUs
// run, so lookups need no lock after Freeze; devices do their own locking.
package bus

import (
	"fmt"
	"sort"
	"sync"
)

// Device handles accesses to the address range it was inserted at. offset
// is relative to the start of that range; len(data) is the access width
// (1, 2, 4 or 8). Read fills data; Write consumes it. Devices must not
// retain data.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

type entry struct {
	base, size uint64
	dev        Device
}

// Bus is an address-sorted set of non-overlapping device ranges.
type Bus struct {
	mu      sync.RWMutex
	entries []entry
}

// Insert adds dev at [base, base+size). Overlaps are an error.
func (b *Bus) Insert(dev Device, base, size uint64) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("bus: invalid range %#x+%#x", base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i < len(b.entries) && b.entries[i].base < base+size {
		return fmt.Errorf("bus: range %#x+%#x overlaps device at %#x", base, size, b.entries[i].base)
	}
	if i > 0 && b.entries[i-1].base+b.entries[i-1].size > base {
		return fmt.Errorf("bus: range %#x+%#x overlaps device at %#x", base, size, b.entries[i-1].base)
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = entry{base: base, size: size, dev: dev}
	return nil
}

// Remove deletes the device inserted at base (hot-unplug).
func (b *Bus) Remove(base uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, e := range b.entries {
		if e.base == base {
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
			return true
		}
	}
	return false
}

func (b *Bus) find(addr uint64, n int) (Device, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base+b.entries[i].size > addr })
	if i == len(b.entries) {
		return nil, 0, false
	}
	e := b.entries[i]
	if addr < e.base || addr-e.base+uint64(n) > e.size {
		return nil, 0, false
	}
	return e.dev, addr - e.base, true
}

// Read dispatches a read; it reports false (and leaves data as all ones,
// what real hardware returns for an unclaimed access) when no device
// claims the whole access.
func (b *Bus) Read(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr, len(data))
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		return false
	}
	dev.Read(off, data)
	return true
}

// Write dispatches a write; it reports false when no device claims it.
func (b *Bus) Write(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr, len(data))
	if !ok {
		return false
	}
	dev.Write(off, data)
	return true
}
