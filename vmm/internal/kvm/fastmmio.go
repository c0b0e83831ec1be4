package kvm

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// maxFastRegs bounds a FastMMIO table (two registers for each of up to 64
// virtio-mmio windows) and so the linear search of an exit.
const maxFastRegs = 128

// FastReg is a 4-byte MMIO register whose value lives in words that are
// only ever accessed atomically, so that a vCPU thread can serve it without
// running Go code (see FastMMIO).
type FastReg struct {
	Addr uint64 // guest-physical address of the register
	// Write selects the access served. A write clears the bits it sets in
	// *Value (write-one-to-clear, as virtio-mmio's InterruptACK); a read
	// returns *Value | *Or (Or may be nil), as InterruptStatus.
	Write bool
	Value *uint32
	Or    *uint32
}

// FastMMIO is the set of registers the vCPU threads serve themselves
// between two KVM_RUNs, still inside the system call as far as the Go
// scheduler knows (VCPU.ServeFast). The virtio-mmio interrupt handler reads
// InterruptStatus and writes InterruptACK on every interrupt: with vhost
// devices those two are most of the exits that reach userspace, and each
// one that returns to Go makes the thread take a P back from the scheduler
// and wakes the runtime's sysmon thread two or three times (sysmon sleeps
// deeply only while no thread holds a P, and takes a P back from a thread
// that stays in a system call). Serving them in place keeps a vCPU thread
// out of the scheduler for a whole interrupt.
//
// Each change publishes a new table; a vCPU takes the current one each
// time Go code enters KVM_RUN, so a change reaches a vCPU at its next exit
// to Go (a kick forces one). Replaced tables stay referenced: a vCPU
// thread may still be reading one.
type FastMMIO struct {
	mu   sync.Mutex
	regs []fastReg
	cur  atomic.Pointer[fastTable]
	old  []*fastTable
}

type fastReg struct {
	addr  uint64
	write bool
	value *uint32
	or    *uint32
}

// fastTable is immutable once published.
type fastTable struct{ regs []fastReg }

// zeroWord stands in for a nil FastReg.Or.
var zeroWord uint32

// Add serves regs from now on. A register needs a Value and must not
// repeat the address and direction of one already served.
func (f *FastMMIO) Add(regs ...FastReg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := append([]fastReg(nil), f.regs...)
	for _, r := range regs {
		if r.Value == nil {
			return fmt.Errorf("fast MMIO register %#x: no value word", r.Addr)
		}
		for _, o := range next {
			if o.addr == r.Addr && o.write == r.Write {
				return fmt.Errorf("fast MMIO register %#x (write %v) already served", r.Addr, r.Write)
			}
		}
		or := r.Or
		if or == nil || r.Write {
			or = &zeroWord
		}
		next = append(next, fastReg{addr: r.Addr, write: r.Write, value: r.Value, or: or})
	}
	if len(next) > maxFastRegs {
		return fmt.Errorf("fast MMIO: %d registers, at most %d", len(next), maxFastRegs)
	}
	f.publishLocked(next)
	return nil
}

// Remove stops serving the registers (both directions) at addrs; their
// accesses reach the vCPUs' exit handling again, each vCPU from its next
// exit to Go code on (see FastMMIO).
func (f *FastMMIO) Remove(addrs ...uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishLocked(slices.DeleteFunc(slices.Clone(f.regs), func(r fastReg) bool { return slices.Contains(addrs, r.addr) }))
}

// Len reports how many registers are served.
func (f *FastMMIO) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.regs)
}

// publishLocked makes regs, a slice no one else holds, the current table.
func (f *FastMMIO) publishLocked(regs []fastReg) {
	if prev := f.cur.Load(); prev != nil {
		f.old = append(f.old, prev)
	}
	f.regs = regs
	f.cur.Store(&fastTable{regs: regs})
}

// current returns the table to serve, nil when there is none.
func (f *FastMMIO) current() *fastTable {
	if f == nil {
		return nil
	}
	return f.cur.Load()
}
