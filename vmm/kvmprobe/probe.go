// Package kvmprobe decides whether this host's /dev/kvm can run a stock
// Linux guest. Some hosts expose a KVM whose guest kernel mode is emulated
// instruction by instruction (a pagetable-based KVM without SVM/VMX): it
// answers every ioctl and runs simple code, but fails on instructions
// Linux needs early (int3, cmpxchg16b, xrstor). The probe runs a tiny
// long-mode payload that takes an int3 through its own IDT and executes
// cmpxchg16b; a real KVM runs it in microseconds, an emulating one stops
// with an internal error.
package kvmprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// Result is the probe's verdict.
type Result struct {
	// CanBootLinux is true when the payload ran to its end correctly.
	CanBootLinux bool
	// Detail says why, in one line.
	Detail string
	// Output is what the payload wrote to its debug port ("ABCD" when
	// everything ran).
	Output string
}

const (
	debugPort  = 0xe9
	memSize    = 2 << 20
	pml4Addr   = 0x1000
	pdptAddr   = 0x2000
	pdAddr     = 0x3000
	gdtAddr    = 0x500
	idtAddr    = 0x600
	scratch    = 0x7000 // 16-byte aligned operand of cmpxchg16b
	codeAddr   = 0x8000
	int3Vector = 3
	handler    = 0x8100
	stackTop   = 0x9000
	// wantOutput is what the payload writes when every step worked.
	wantOutput = "ABCD"
)

// payload writes 'A', takes int3 (handler writes 'B' and returns with
// iretq), writes 'C', runs lock cmpxchg16b on scratch, writes 'D', halts.
var payload = []byte{
	0xb0, 'A', 0xe6, debugPort, // mov al,'A'; out 0xe9,al
	0xcc,                       // int3
	0xb0, 'C', 0xe6, debugPort, // mov al,'C'; out 0xe9,al
	0x48, 0x31, 0xc0, // xor rax,rax
	0x48, 0x31, 0xd2, // xor rdx,rdx
	0xbf, scratch & 0xff, scratch >> 8, 0, 0, // mov edi,scratch
	0xf0, 0x48, 0x0f, 0xc7, 0x0f, // lock cmpxchg16b [rdi]
	0xb0, 'D', 0xe6, debugPort, // mov al,'D'; out 0xe9,al
	0xf4, // hlt
}

var handlerCode = []byte{
	0xb0, 'B', 0xe6, debugPort, // mov al,'B'; out 0xe9,al
	0x48, 0xcf, // iretq
}

var (
	once   sync.Once
	cached Result
)

// Host probes /dev/kvm once per process and caches the answer.
// STRATOVIRT_HOST_KVM=linux or =lab overrides the probe (for hosts where
// the operator knows better).
func Host() Result {
	once.Do(func() {
		switch os.Getenv("STRATOVIRT_HOST_KVM") {
		case "linux":
			cached = Result{CanBootLinux: true, Detail: "STRATOVIRT_HOST_KVM=linux"}
			return
		case "lab":
			cached = Result{Detail: "STRATOVIRT_HOST_KVM=lab"}
			return
		}
		r, err := Probe("/dev/kvm", 5*time.Second)
		if err != nil {
			r = Result{Detail: err.Error()}
		}
		cached = r
	})
	return cached
}

// Probe runs the payload on the KVM device at path. An error means the
// probe itself could not run (no device, no permission); a payload that
// fails is a Result with CanBootLinux false.
func Probe(path string, timeout time.Duration) (Result, error) {
	sys, err := kvm.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return Result{}, err
	}
	defer vm.Close()
	mem, err := unix.Mmap(-1, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return Result{}, fmt.Errorf("map probe memory: %w", err)
	}
	defer unix.Munmap(mem)
	buildMemory(mem)
	if err := vm.SetUserMemoryRegion(0, 0, mem, 0); err != nil {
		return Result{}, err
	}
	type outcome struct {
		res Result
		err error
	}
	done := make(chan outcome, 1)
	tid := make(chan int, 1)
	var vcpu *kvm.VCPU
	go func() {
		// KVM wants a vCPU's ioctls issued from one thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		var err error
		vcpu, err = vm.CreateVCPU(0)
		if err != nil {
			done <- outcome{err: err}
			return
		}
		defer vcpu.Close()
		r, err := run(vcpu)
		done <- outcome{r, err}
	}()
	t := <-tid
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(timeout):
		// A real KVM finishes in microseconds: a payload still running
		// is an emulating KVM crawling. Kick it out and report that.
		for i := 0; i < 100; i++ {
			if vcpu != nil {
				vcpu.SetImmediateExit(true)
			}
			unix.Tgkill(unix.Getpid(), t, unix.SIGURG)
			select {
			case <-done:
				return Result{Detail: fmt.Sprintf("%s did not run the probe payload within %v", path, timeout)}, nil
			case <-time.After(50 * time.Millisecond):
			}
		}
		return Result{}, fmt.Errorf("probe vCPU on %s cannot be stopped", path)
	}
}

func run(v *kvm.VCPU) (Result, error) {
	if err := setupVCPU(v); err != nil {
		return Result{}, err
	}
	var out []byte
	for steps := 0; steps < 64; steps++ {
		if err := v.Run(); err != nil {
			if errors.Is(err, kvm.ErrInterrupted) {
				if v.ImmediateExit() {
					return Result{Output: string(out), Detail: "probe interrupted"}, nil
				}
				continue
			}
			return Result{}, err
		}
		switch r := v.ExitReason(); r {
		case kvm.ExitIO:
			io, err := v.IO()
			if err != nil {
				return Result{}, err
			}
			if io.Port == debugPort && io.Dir == kvm.IODirOut {
				out = append(out, io.Data...)
			}
		case kvm.ExitHLT:
			if string(out) == wantOutput {
				return Result{CanBootLinux: true, Output: string(out), Detail: "int3 through the IDT and cmpxchg16b run natively"}, nil
			}
			return Result{Output: string(out), Detail: fmt.Sprintf("payload wrote %q, want %q", out, wantOutput)}, nil
		case kvm.ExitInternalError:
			ie := v.InternalError()
			return Result{Output: string(out), Detail: fmt.Sprintf("KVM internal error (suberror %d) after output %q: guest kernel mode is emulated, not virtualized", ie.Suberror, out)}, nil
		default:
			return Result{Output: string(out), Detail: fmt.Sprintf("unexpected exit reason %d after output %q", r, out)}, nil
		}
	}
	return Result{Output: string(out), Detail: "payload did not halt"}, nil
}

// buildMemory lays out identity page tables for the first 2 MiB, a GDT, an
// IDT with a gate for int3, and the code.
func buildMemory(mem []byte) {
	le := binary.LittleEndian
	le.PutUint64(mem[pml4Addr:], pdptAddr|3)
	le.PutUint64(mem[pdptAddr:], pdAddr|3)
	le.PutUint64(mem[pdAddr:], 0|0x83)                 // present, writable, 2 MiB page
	le.PutUint64(mem[gdtAddr+8:], 0x00af9b000000ffff)  // 64-bit code
	le.PutUint64(mem[gdtAddr+16:], 0x00cf93000000ffff) // data
	gate := mem[idtAddr+int3Vector*16:]
	le.PutUint16(gate[0:], handler&0xffff)
	le.PutUint16(gate[2:], 0x08) // code selector
	gate[4] = 0                  // IST
	gate[5] = 0x8e               // present, DPL 0, 64-bit interrupt gate
	le.PutUint16(gate[6:], handler>>16)
	le.PutUint32(gate[8:], 0)
	copy(mem[codeAddr:], payload)
	copy(mem[handler:], handlerCode)
}

func setupVCPU(v *kvm.VCPU) error {
	s, err := v.GetSregs()
	if err != nil {
		return err
	}
	code := kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: 0x08, Type: 11, Present: 1, S: 1, L: 1, G: 1}
	data := kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: 0x10, Type: 3, Present: 1, S: 1, DB: 1, G: 1}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = kvm.Segment{Limit: 0x67, Selector: 0x18, Type: 11, Present: 1}
	s.LDT = kvm.Segment{Type: 2, Present: 1}
	s.GDT = kvm.DTable{Base: gdtAddr, Limit: 23}
	s.IDT = kvm.DTable{Base: idtAddr, Limit: (int3Vector+1)*16 - 1}
	s.CR0 = 0x80010031 // PG | WP | NE | ET | PE
	s.CR3 = pml4Addr
	s.CR4 = 0x20   // PAE
	s.EFER = 0x500 // LME | LMA
	if err := v.SetSregs(s); err != nil {
		return err
	}
	return v.SetRegs(kvm.Regs{RIP: codeAddr, RSP: stackTop, RFLAGS: 2})
}
