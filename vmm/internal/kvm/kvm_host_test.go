package kvm_test

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm/kvmtest"
)

// exits records what a payload did until it halted.
type exits struct {
	out      []byte            // bytes written with OUT (any port)
	ports    []uint16          // port of each OUT access
	mmioW    map[uint64][]byte // MMIO writes by address
	mmioRead func(addr uint64, data []byte)
	in       func(port uint16, data []byte)
}

// runToHLT runs cpu on the calling (locked) thread until ExitHLT. A
// watchdog kicks the vCPU after timeout so a broken payload fails the test
// instead of hanging it.
func runToHLT(t *testing.T, cpu *kvm.VCPU, ex *exits, timeout time.Duration) {
	t.Helper()
	tid := unix.Gettid()
	timer := time.AfterFunc(timeout, func() {
		cpu.SetImmediateExit(true)
		unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
	})
	defer timer.Stop()
	if ex.mmioW == nil {
		ex.mmioW = map[uint64][]byte{}
	}
	for i := 0; i < 100000; i++ {
		if err := cpu.Run(); err != nil {
			if errors.Is(err, kvm.ErrInterrupted) && !cpu.ImmediateExit() {
				continue // stray runtime signal
			}
			regs, _ := cpu.GetRegs()
			t.Fatalf("run: %v (rip %#x)", err, regs.RIP)
		}
		switch r := cpu.ExitReason(); r {
		case kvm.ExitHLT:
			return
		case kvm.ExitIO:
			io, err := cpu.IO()
			if err != nil {
				t.Fatal(err)
			}
			if io.Dir == kvm.IODirOut {
				ex.out = append(ex.out, io.Data...)
				ex.ports = append(ex.ports, io.Port)
			} else if ex.in != nil {
				ex.in(io.Port, io.Data)
			}
		case kvm.ExitMMIO:
			m, err := cpu.MMIO()
			if err != nil {
				t.Fatal(err)
			}
			if m.IsWrite {
				ex.mmioW[m.Addr] = append([]byte(nil), m.Data...)
			} else if ex.mmioRead != nil {
				ex.mmioRead(m.Addr, m.Data)
			}
		default:
			regs, _ := cpu.GetRegs()
			t.Fatalf("unexpected exit %d at rip %#x", r, regs.RIP)
		}
	}
	t.Fatal("payload did not halt")
}

func newCPU(t *testing.T, vm *kvmtest.VM, id int) *kvm.VCPU {
	t.Helper()
	cpu, err := vm.VM.CreateVCPU(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cpu.Close() })
	return cpu
}

func TestSystem(t *testing.T) {
	sys := kvmtest.Open(t)
	if err := sys.RequireCaps(); err != nil {
		t.Fatalf("required caps: %v", err)
	}
	err := sys.RequireCaps(kvm.CapIRQChip, kvm.Cap(100000))
	if err == nil || !strings.Contains(err.Error(), "KVM_CAP(100000)") {
		t.Fatalf("missing capability error = %v, want it to name KVM_CAP(100000)", err)
	}
	n, err := sys.VCPUMmapSize()
	if err != nil || n < 4096 {
		t.Fatalf("VCPUMmapSize = %d, %v", n, err)
	}
	ids, err := sys.CheckExtension(kvm.CapMaxVCPUs)
	if err != nil || ids < 1 {
		t.Fatalf("MAX_VCPUS = %d, %v", ids, err)
	}
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	var leaf0, leaf1 bool
	for _, e := range cpuid {
		switch e.Function {
		case 0:
			leaf0 = e.EAX >= 1
		case 1:
			leaf1 = true
		}
	}
	if !leaf0 || !leaf1 {
		t.Fatalf("supported CPUID (%d entries) lacks leaf 0 or 1", len(cpuid))
	}
}

func TestOpenMissingDevice(t *testing.T) {
	_, err := kvm.Open("/nonexistent/kvm")
	if err == nil || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Open missing = %v, want ENOENT", err)
	}
}

func TestRealModePortIO(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'H', // mov al, 'H'
		0xee,      // out dx, al
		0xb0, 'i', // mov al, 'i'
		0xee,             // out dx, al
		0xbe, 0x00, 0x11, // mov si, 0x1100
		0xb9, 0x03, 0x00, // mov cx, 3
		0xf3, 0x6e, // rep outsb
		0xf4, // hlt
	})
	vm.Load(t, 0x1100, []byte("abc"))
	cpu := newCPU(t, vm, 0)
	if err := kvmtest.SetupRealMode(cpu, 0x1000, kvm.Regs{}); err != nil {
		t.Fatal(err)
	}
	var ex exits
	runToHLT(t, cpu, &ex, time.Second)
	if string(ex.out) != "Hiabc" {
		t.Fatalf("port output %q, want %q", ex.out, "Hiabc")
	}
	for _, p := range ex.ports {
		if p != 0x3f8 {
			t.Fatalf("port %#x, want 0x3f8", p)
		}
	}
	regs, err := cpu.GetRegs()
	if err != nil {
		t.Fatal(err)
	}
	if regs.RIP != 0x1012 || regs.RSI&0xffff != 0x1103 {
		t.Fatalf("after hlt rip %#x si %#x, want 0x1012 0x1103", regs.RIP, regs.RSI)
	}
}

func TestRealModeMMIO(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm := kvmtest.NewVM(t, 1<<16, false) // RAM ends at 0x10000; MMIO above
	vm.Load(t, 0x1000, []byte{
		0xb8, 0x00, 0x10, // mov ax, 0x1000
		0x8e, 0xd8, // mov ds, ax
		0xc6, 0x06, 0x00, 0x00, 0x5a, // mov byte [0], 0x5a   -> MMIO write 0x10000
		0x66, 0xa1, 0x04, 0x00, // mov eax, [4]          -> MMIO read 0x10004
		0xba, 0x10, 0x00, // mov dx, 0x10
		0x66, 0xef, // out dx, eax
		0xf4, // hlt
	})
	cpu := newCPU(t, vm, 0)
	if err := kvmtest.SetupRealMode(cpu, 0x1000, kvm.Regs{}); err != nil {
		t.Fatal(err)
	}
	var reads []uint64
	ex := exits{mmioRead: func(addr uint64, data []byte) {
		reads = append(reads, addr)
		binary.LittleEndian.PutUint32(data, 0xdeadbeef)
	}}
	runToHLT(t, cpu, &ex, time.Second)
	if w := ex.mmioW[0x10000]; len(w) != 1 || w[0] != 0x5a {
		t.Fatalf("MMIO writes %v, want 0x5a at 0x10000", ex.mmioW)
	}
	if len(reads) != 1 || reads[0] != 0x10004 {
		t.Fatalf("MMIO reads %#x, want [0x10004]", reads)
	}
	if len(ex.out) != 4 || binary.LittleEndian.Uint32(ex.out) != 0xdeadbeef {
		t.Fatalf("echoed %x, want efbeadde", ex.out)
	}
}

func TestLongMode(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm := kvmtest.NewVM(t, 2<<20, false)
	tables, err := kvmtest.WriteLongModeTables(vm.Mem, 1)
	if err != nil {
		t.Fatal(err)
	}
	vm.Load(t, 0x10000, []byte{
		0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, 0x1122334455667788
		0x48, 0x89, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, // mov [0x8000], rax
		0x66, 0xba, 0x10, 0x00, // mov dx, 0x10
		0xb0, 'L', // mov al, 'L'
		0xee, // out dx, al
		0xf4, // hlt
	})
	cpu := newCPU(t, vm, 0)
	if err := kvmtest.SetupLongMode(cpu, tables, 0x10000, kvm.Regs{}); err != nil {
		t.Fatal(err)
	}
	var ex exits
	runToHLT(t, cpu, &ex, time.Second)
	if string(ex.out) != "L" || ex.ports[0] != 0x10 {
		t.Fatalf("output %q on %#x, want L on 0x10", ex.out, ex.ports)
	}
	b, err := vm.Mem.Slice(0x8000, 8)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(b); got != 0x1122334455667788 {
		t.Fatalf("64-bit store wrote %#x", got)
	}
	s, err := cpu.GetSregs()
	if err != nil {
		t.Fatal(err)
	}
	if s.EFER&(1<<10) == 0 || s.CS.L != 1 {
		t.Fatalf("not in long mode: efer %#x cs.l %d", s.EFER, s.CS.L)
	}
}

func TestIOEventFD(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm := kvmtest.NewVM(t, 1<<16, false)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	ev := kvm.IOEvent{Fd: efd, Addr: 0x10050, Len: 4, MatchData: true, DataMatch: 1}
	if err := vm.VM.AssignIOEventFD(ev); err != nil {
		t.Fatal(err)
	}
	vm.Load(t, 0x1000, []byte{
		0xb8, 0x00, 0x10, // mov ax, 0x1000
		0x8e, 0xd8, // mov ds, ax
		0x66, 0xc7, 0x06, 0x50, 0x00, 0x01, 0x00, 0x00, 0x00, // mov dword [0x50], 1  -> eventfd
		0x66, 0xc7, 0x06, 0x50, 0x00, 0x02, 0x00, 0x00, 0x00, // mov dword [0x50], 2  -> no match: MMIO exit
		0xf4, // hlt
	})
	cpu := newCPU(t, vm, 0)
	if err := kvmtest.SetupRealMode(cpu, 0x1000, kvm.Regs{}); err != nil {
		t.Fatal(err)
	}
	var ex exits
	runToHLT(t, cpu, &ex, time.Second)
	var buf [8]byte
	if _, err := unix.Read(efd, buf[:]); err != nil {
		t.Fatalf("eventfd not signalled: %v", err)
	}
	if n := binary.LittleEndian.Uint64(buf[:]); n != 1 {
		t.Fatalf("eventfd count %d, want 1", n)
	}
	if len(ex.mmioW) != 1 || binary.LittleEndian.Uint32(ex.mmioW[0x10050]) != 2 {
		t.Fatalf("userspace MMIO writes %v, want only the non-matching value 2", ex.mmioW)
	}
	if err := vm.VM.DeassignIOEventFD(ev); err != nil {
		t.Fatal(err)
	}
	if err := vm.VM.DeassignIOEventFD(ev); err == nil {
		t.Fatal("second deassign succeeded")
	}
}

func TestIRQFD(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, true)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	rfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	if err := vm.VM.AssignIRQFD(efd, 5, -1); err != nil {
		t.Fatal(err)
	}
	if err := vm.VM.AssignIRQFD(efd, 5, -1); err == nil {
		t.Fatal("assigning the same irqfd twice succeeded")
	}
	if _, err := unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := vm.VM.DeassignIRQFD(efd, 5); err != nil {
		t.Fatal(err)
	}
	if err := vm.VM.AssignIRQFD(efd, 6, rfd); err != nil {
		t.Fatalf("resample irqfd: %v", err)
	}
	if err := vm.VM.DeassignIRQFD(efd, 6); err != nil {
		t.Fatal(err)
	}
	if err := vm.VM.IRQLine(4, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.VM.IRQLine(4, false); err != nil {
		t.Fatal(err)
	}
}

func TestIRQFDNeedsIRQChip(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	rfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	// A level-triggered (resample) irqfd needs the in-kernel irqchip.
	if err := vm.VM.AssignIRQFD(efd, 5, rfd); err == nil {
		vm.VM.DeassignIRQFD(efd, 5)
		t.Fatal("resample irqfd without an irqchip succeeded")
	}
}

func TestVCPUState(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm := kvmtest.NewVM(t, 1<<16, true)
	sys := vm.Sys
	cpu := newCPU(t, vm, 0)

	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}

	const msrSysenterCS = 0x174
	if err := cpu.SetMSRs([]kvm.MSREntry{{Index: msrSysenterCS, Data: 0x10}}); err != nil {
		t.Fatal(err)
	}
	got := []kvm.MSREntry{{Index: msrSysenterCS}}
	if err := cpu.GetMSRs(got); err != nil {
		t.Fatal(err)
	}
	if got[0].Data != 0x10 {
		t.Fatalf("SYSENTER_CS = %#x, want 0x10", got[0].Data)
	}
	err = cpu.SetMSRs([]kvm.MSREntry{{Index: msrSysenterCS, Data: 1}, {Index: 0xdeadbeef, Data: 1}})
	if err == nil || !strings.Contains(err.Error(), "0xdeadbeef") {
		t.Fatalf("bogus MSR error = %v, want it to name 0xdeadbeef", err)
	}

	regs := kvm.Regs{RAX: 1, R15: 0xf15, RIP: 0xfff0, RFLAGS: 2}
	if err := cpu.SetRegs(regs); err != nil {
		t.Fatal(err)
	}
	if r, err := cpu.GetRegs(); err != nil || r.RAX != 1 || r.R15 != 0xf15 || r.RIP != 0xfff0 {
		t.Fatalf("regs round trip: %+v %v", r, err)
	}

	fpu := kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
	fpu.XMM[3][0] = 0xab
	if err := cpu.SetFPU(fpu); err != nil {
		t.Fatal(err)
	}
	if f, err := cpu.GetFPU(); err != nil || f.FCW != 0x37f || f.XMM[3][0] != 0xab {
		t.Fatalf("fpu round trip: fcw %#x xmm3 %#x %v", f.FCW, f.XMM[3][0], err)
	}

	lapic, err := cpu.GetLAPIC()
	if err != nil {
		t.Fatal(err)
	}
	const lvt0 = 0x350
	binary.LittleEndian.PutUint32(lapic.Regs[lvt0:], 0x700) // ExtINT
	if err := cpu.SetLAPIC(&lapic); err != nil {
		t.Fatal(err)
	}
	if l, err := cpu.GetLAPIC(); err != nil || binary.LittleEndian.Uint32(l.Regs[lvt0:])&0x700 != 0x700 {
		t.Fatalf("LVT0 round trip: %v", err)
	}

	st, err := cpu.GetMPState()
	if err != nil || st != kvm.MPStateRunnable {
		t.Fatalf("BSP mp state = %d, %v; want runnable", st, err)
	}
	if err := cpu.SetMPState(kvm.MPStateHalted); err != nil {
		t.Fatal(err)
	}
	if st, err := cpu.GetMPState(); err != nil || st != kvm.MPStateHalted {
		t.Fatalf("mp state = %d, %v; want halted", st, err)
	}
}

// TestKickInterruptsRun checks that SIGURG sent with tgkill turns a
// running KVM_RUN into EINTR, which is how vcpu.Group stops vCPUs.
func TestKickInterruptsRun(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, []byte{0xeb, 0xfe}) // jmp $
	cpu := newCPU(t, vm, 0)
	if err := kvmtest.SetupRealMode(cpu, 0x1000, kvm.Regs{}); err != nil {
		t.Fatal(err)
	}
	tid := unix.Gettid()
	start := time.Now()
	time.AfterFunc(50*time.Millisecond, func() {
		unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
	})
	err := cpu.Run()
	if !errors.Is(err, kvm.ErrInterrupted) || !errors.Is(err, unix.EINTR) {
		t.Fatalf("Run = %v, want ErrInterrupted wrapping EINTR", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("Run returned after %v, before the kick", d)
	}
	// immediate_exit makes the next KVM_RUN return at once.
	cpu.SetImmediateExit(true)
	if err := cpu.Run(); !errors.Is(err, kvm.ErrInterrupted) {
		t.Fatalf("Run with immediate_exit = %v", err)
	}
	cpu.SetImmediateExit(false)
}

func TestPreFaultMemory(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<20, false)
	if n, err := vm.VM.CheckExtension(kvm.CapPreFaultMemory); err != nil || n == 0 {
		t.Skipf("host KVM lacks %v (%d, %v)", kvm.CapPreFaultMemory, n, err)
	}
	cpu := newCPU(t, vm, 0)
	if n, err := cpu.PreFaultMemory(0x10000, 0x20000); err != nil || n != 0x20000 {
		t.Fatalf("PreFaultMemory in RAM = %#x, %v; want %#x, nil", n, err, 0x20000)
	}
	// Past the only memory slot: nothing is mapped and the error says why.
	n, err := cpu.PreFaultMemory(1<<30, 0x1000)
	if !errors.Is(err, unix.ENOENT) || n != 0 || !strings.Contains(err.Error(), "KVM_PRE_FAULT_MEMORY") {
		t.Fatalf("PreFaultMemory outside memory = %#x, %v; want 0, ENOENT", n, err)
	}
}

// BenchmarkMMIOWrite times one guest write to a 4-byte MMIO register, exit
// and all, by how it is served: "ioeventfd" in the kernel (a datamatch
// ioeventfd, as the transport's InterruptACK of the vring bit), "fast" by
// the vCPU thread between two KVM_RUNs (kvm.FastMMIO), "go" back in Go
// after KVM_RUN returns. The payload writes b.N times and halts.
func BenchmarkMMIOWrite(b *testing.B) {
	for _, mode := range []string{"ioeventfd", "fast", "go"} {
		b.Run(mode, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			vm := kvmtest.NewVM(b, 1<<16, false)
			code := []byte{
				0xb8, 0x00, 0x10, // mov ax, 0x1000
				0x8e, 0xd8, // mov ds, ax
				0x66, 0xb9, 0, 0, 0, 0, // mov ecx, b.N
				0x66, 0xc7, 0x06, 0x64, 0x00, 0x01, 0x00, 0x00, 0x00, // loop: mov dword [0x64], 1
				0x66, 0x49, // dec ecx
				0x75, 0xf3, // jnz loop
				0xf4, // hlt
			}
			binary.LittleEndian.PutUint32(code[7:], uint32(b.N))
			vm.Load(b, 0x1000, code)
			cpu, err := vm.VM.CreateVCPU(0)
			if err != nil {
				b.Fatal(err)
			}
			defer cpu.Close()
			if err := kvmtest.SetupRealMode(cpu, 0x1000, kvm.Regs{}); err != nil {
				b.Fatal(err)
			}
			status := uint32(0)
			var f kvm.FastMMIO
			switch mode {
			case "ioeventfd":
				efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
				if err != nil {
					b.Fatal(err)
				}
				defer unix.Close(efd)
				if err := vm.VM.AssignIOEventFD(kvm.IOEvent{Fd: efd, Addr: 0x10064, Len: 4, MatchData: true, DataMatch: 1}); err != nil {
					b.Fatal(err)
				}
			case "fast":
				if !kvm.ServesFastMMIO {
					b.Skip("no fast MMIO on this platform")
				}
				if err := f.Add(kvm.FastReg{Addr: 0x10064, Write: true, Value: &status}); err != nil {
					b.Fatal(err)
				}
				cpu.ServeFast(&f)
			}
			goWrites := 0
			b.ResetTimer()
			for {
				if err := cpu.Run(); err != nil {
					if errors.Is(err, kvm.ErrInterrupted) {
						continue
					}
					b.Fatal(err)
				}
				r := cpu.ExitReason()
				if r == kvm.ExitHLT {
					break
				}
				if r != kvm.ExitMMIO {
					b.Fatalf("unexpected exit %d", r)
				}
				goWrites++
			}
			b.StopTimer()
			if want := map[string]int{"go": b.N}[mode]; goWrites != want {
				b.Fatalf("%d writes reached Go, want %d", goWrites, want)
			}
		})
	}
}
