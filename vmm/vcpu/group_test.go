package vcpu_test

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/vmm/bus"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm/kvmtest"
	"github.com/stratovirt-go/stratovirt/vmm/vcpu"
)

// recorder is a bus device that records writes and answers reads with a
// fixed byte pattern.
type recorder struct {
	mu     sync.Mutex
	writes []byte
	offs   []uint64
	read   func(off uint64, data []byte)
	onW    func(off uint64, data []byte)
}

func (r *recorder) Read(off uint64, data []byte) {
	if r.read != nil {
		r.read(off, data)
	}
}

func (r *recorder) Write(off uint64, data []byte) {
	r.mu.Lock()
	r.writes = append(r.writes, data...)
	r.offs = append(r.offs, off)
	r.mu.Unlock()
	if r.onW != nil {
		r.onW(off, data)
	}
}

func (r *recorder) got() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.writes...)
}

func realMode(rip uint64) func(*kvm.VCPU) error {
	return func(c *kvm.VCPU) error {
		return kvmtest.SetupRealMode(c, rip, kvm.Regs{RBX: uint64(c.ID())})
	}
}

func waitTimeout(t *testing.T, g *vcpu.Group, d time.Duration) (vcpu.Reason, error) {
	t.Helper()
	select {
	case <-g.Done():
	case <-time.After(d):
		g.Stop(vcpu.Stopped)
		t.Fatalf("vCPUs still running after %v", d)
	}
	return g.Wait()
}

func TestReasonString(t *testing.T) {
	tests := []struct {
		r    vcpu.Reason
		want string
	}{
		{vcpu.Running, "running"},
		{vcpu.PowerOff, "power-off"},
		{vcpu.Reset, "reset"},
		{vcpu.Stopped, "stopped"},
		{vcpu.Error, "error"},
		{vcpu.Halted, "halted"},
		{vcpu.Reason(42), "reason(42)"},
	}
	for _, tc := range tests {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("Reason(%d).String() = %q, want %q", int(tc.r), got, tc.want)
		}
	}
}

func TestStartValidates(t *testing.T) {
	if _, err := vcpu.Start(vcpu.Config{Count: 1}); err == nil {
		t.Fatal("Start without a VM succeeded")
	}
}

func TestPortIOAndMMIO(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false) // RAM 0..0x10000, MMIO above
	vm.Load(t, 0x1000, []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'o', // mov al, 'o'
		0xee,             // out dx, al
		0xbe, 0x00, 0x11, // mov si, 0x1100
		0xb9, 0x02, 0x00, // mov cx, 2
		0xf3, 0x6e, // rep outsb           -> "ab"
		0xba, 0x99, 0x00, // mov dx, 0x99
		0xec,             // in al, dx          -> unclaimed: 0xff
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xee,             // out dx, al
		0xba, 0x80, 0x00, // mov dx, 0x80
		0xbf, 0x00, 0x12, // mov di, 0x1200
		0xb9, 0x03, 0x00, // mov cx, 3
		0xf3, 0x6c, // rep insb            -> 3 reads of port 0x80 into [0x1200]
		0xb8, 0x00, 0x10, // mov ax, 0x1000
		0x8e, 0xd8, // mov ds, ax
		0xc6, 0x06, 0x10, 0x00, 0x77, // mov byte [0x10], 0x77 -> MMIO write 0x10010
		0x66, 0xa1, 0x20, 0x00, // mov eax, [0x20]       -> MMIO read 0x10020
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0x66, 0xef, // out dx, eax (dx=0x3f8)
		0xa0, 0x00, 0x50, // mov al, [0x5000]      -> unclaimed MMIO read 0x15000
		0xee, // out dx, al
		0xf4, // hlt
	})
	vm.Load(t, 0x1100, []byte("ab"))

	serial := &recorder{}
	var in byte
	inDev := &recorder{read: func(off uint64, data []byte) { in++; data[0] = 0x30 + in }}
	mmio := &recorder{read: func(off uint64, data []byte) {
		if off == 0x20 && len(data) == 4 {
			binary.LittleEndian.PutUint32(data, 0xcafef00d)
		}
	}}
	var pio, mb bus.Bus
	if err := pio.Insert(serial, 0x3f8, 8); err != nil {
		t.Fatal(err)
	}
	if err := pio.Insert(inDev, 0x80, 1); err != nil {
		t.Fatal(err)
	}
	if err := mb.Insert(mmio, 0x10000, 0x1000); err != nil {
		t.Fatal(err)
	}
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 1, PIO: &pio, MMIO: &mb, Setup: realMode(0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	reason, err := waitTimeout(t, g, 2*time.Second)
	if reason != vcpu.Halted || err != nil {
		t.Fatalf("Wait = %v, %v; want halted", reason, err)
	}
	want := []byte{'o', 'a', 'b', 0xff, 0x0d, 0xf0, 0xfe, 0xca, 0xff}
	if got := serial.got(); !slices.Equal(got, want) {
		t.Fatalf("serial got % x, want % x", got, want)
	}
	b, _ := vm.Mem.Slice(0x1200, 3)
	if string(b) != "123" {
		t.Fatalf("rep insb stored %q, want \"123\"", b)
	}
	if got := mmio.got(); !slices.Equal(got, []byte{0x77}) || mmio.offs[0] != 0x10 {
		t.Fatalf("MMIO writes % x at %v, want 77 at 0x10", got, mmio.offs)
	}
}

// TestFastMMIO checks that the vCPU threads serve Config.FastMMIO: a read
// of a register it lists never reaches the MMIO bus, even where a device
// covers the address.
func TestFastMMIO(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, []byte{
		0xb8, 0x00, 0x10, // mov ax, 0x1000
		0x8e, 0xd8, // mov ds, ax
		0x66, 0xa1, 0x20, 0x00, // mov eax, [0x20]  -> 0x10020, served
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0x66, 0xef, // out dx, eax
		0xf4, // hlt
	})
	serial := &recorder{}
	var busReads int
	dev := &recorder{read: func(off uint64, data []byte) {
		busReads++
		binary.LittleEndian.PutUint32(data, 0xcafef00d)
	}}
	var pio, mb bus.Bus
	if err := pio.Insert(serial, 0x3f8, 8); err != nil {
		t.Fatal(err)
	}
	if err := mb.Insert(dev, 0x10000, 0x1000); err != nil {
		t.Fatal(err)
	}
	status := uint32(5)
	var fast kvm.FastMMIO
	if err := fast.Add(kvm.FastReg{Addr: 0x10020, Value: &status}); err != nil {
		t.Fatal(err)
	}
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 1, PIO: &pio, MMIO: &mb, FastMMIO: &fast, Setup: realMode(0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	if reason, err := waitTimeout(t, g, 2*time.Second); reason != vcpu.Halted || err != nil {
		t.Fatalf("Wait = %v, %v; want halted", reason, err)
	}
	want, wantBusReads := []byte{5, 0, 0, 0}, 0
	if !kvm.ServesFastMMIO {
		want, wantBusReads = []byte{0x0d, 0xf0, 0xfe, 0xca}, 1
	}
	if got := serial.got(); !slices.Equal(got, want) || busReads != wantBusReads {
		t.Fatalf("guest read % x with %d bus reads, want % x with %d", got, busReads, want, wantBusReads)
	}
}

// spin increments the dword at 0x800 forever.
var spin = []byte{
	0x66, 0xff, 0x06, 0x00, 0x08, // inc dword [0x800]
	0xeb, 0xf9, // jmp back
}

func counter(t *testing.T, vm *kvmtest.VM) uint32 {
	t.Helper()
	b, err := vm.Mem.Slice(0x800, 4)
	if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b)
}

func waitCounterChange(t *testing.T, vm *kvmtest.VM, from uint32) uint32 {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if c := counter(t, vm); c != from {
			return c
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("counter stuck at %d", from)
	return 0
}

func TestPauseResumeStop(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, spin)
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 1, Setup: realMode(0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop(vcpu.Stopped)
	waitCounterChange(t, vm, 0)

	if err := g.Pause(); err != nil {
		t.Fatal(err)
	}
	c1 := counter(t, vm)
	time.Sleep(30 * time.Millisecond)
	if c2 := counter(t, vm); c2 != c1 {
		t.Fatalf("counter moved while paused: %d -> %d", c1, c2)
	}
	if err := g.Pause(); err != nil { // idempotent
		t.Fatal(err)
	}
	g.Resume()
	waitCounterChange(t, vm, c1)

	start := time.Now()
	go g.Stop(vcpu.Stopped)
	reason, err := waitTimeout(t, g, time.Second)
	if reason != vcpu.Stopped || err != nil {
		t.Fatalf("Wait = %v, %v; want stopped", reason, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Stop took %v", d)
	}
	// A later stop does not change the reason.
	g.Stop(vcpu.PowerOff)
	if r, _ := g.Wait(); r != vcpu.Stopped {
		t.Fatalf("reason changed to %v", r)
	}
	if err := g.Pause(); err != nil {
		t.Fatalf("Pause after stop: %v", err)
	}
}

func TestStopWhilePaused(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, spin)
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 2, Setup: realMode(0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Pause(); err != nil {
		t.Fatal(err)
	}
	g.Stop(vcpu.Reset)
	if reason, err := waitTimeout(t, g, time.Second); reason != vcpu.Reset || err != nil {
		t.Fatalf("Wait = %v, %v; want reset", reason, err)
	}
}

// TestThreads checks that each running vCPU thread is named as QEMU's
// are, and that vCPUs add no P (package threads says why).
func TestThreads(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, spin)
	base := runtime.GOMAXPROCS(0)
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 3, Setup: realMode(0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("3 vCPUs running: GOMAXPROCS %d, want %d", got, base)
	}
	names := map[string]bool{}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		if b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/comm"); err == nil {
			names[strings.TrimSpace(string(b))] = true
		}
	}
	for _, want := range []string{"CPU 0/KVM", "CPU 1/KVM", "CPU 2/KVM"} {
		if !names[want] {
			t.Errorf("no thread named %q among %v", want, names)
		}
	}
	g.Stop(vcpu.Reset)
	if reason, err := waitTimeout(t, g, time.Second); reason != vcpu.Reset || err != nil {
		t.Fatalf("Wait = %v, %v; want reset", reason, err)
	}
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("after Wait: GOMAXPROCS %d, want %d", got, base)
	}
}

func TestDevicePowerOff(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, []byte{
		0xba, 0x04, 0x06, // mov dx, 0x604
		0xb0, 0x20, // mov al, 0x20
		0xee,       // out dx, al
		0xeb, 0xfe, // jmp $ (never halts on its own)
	})
	started := make(chan *vcpu.Group, 1)
	dev := &recorder{}
	dev.onW = func(off uint64, data []byte) {
		g := <-started // device code runs on the vCPU goroutine
		g.Stop(vcpu.PowerOff)
	}
	var pio bus.Bus
	if err := pio.Insert(dev, 0x604, 1); err != nil {
		t.Fatal(err)
	}
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 1, PIO: &pio, Setup: realMode(0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	started <- g
	if reason, err := waitTimeout(t, g, time.Second); reason != vcpu.PowerOff || err != nil {
		t.Fatalf("Wait = %v, %v; want power-off", reason, err)
	}
}

// TestTripleFault runs long-mode payloads with no usable IDT whose first
// exception escalates to a triple fault. (A real-mode variant, int3 with
// an IDT limit of 0, is not used: the pagetable-based KVM on the
// development hosts ignores the real-mode IVT limit.)
func TestTripleFault(t *testing.T) {
	tests := []struct {
		name string
		code []byte
	}{
		{"jump to unmapped address", []byte{
			0x48, 0xb8, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, // mov rax, 0x80000000 (unmapped)
			0xff, 0xe0, // jmp rax
		}},
		{"store to unmapped address", []byte{
			0x48, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // mov rax, 1<<32
			0xc6, 0x00, 0x01, // mov byte [rax], 1
			0xeb, 0xfe, // jmp $
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vm := kvmtest.NewVM(t, 2<<20, false)
			tables, err := kvmtest.WriteLongModeTables(vm.Mem, 1)
			if err != nil {
				t.Fatal(err)
			}
			vm.Load(t, 0x10000, tc.code)
			g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 1, Setup: func(c *kvm.VCPU) error {
				return kvmtest.SetupLongMode(c, tables, 0x10000, kvm.Regs{})
			}})
			if err != nil {
				t.Fatal(err)
			}
			reason, err := waitTimeout(t, g, 2*time.Second)
			checkTripleFault(t, reason, err)
			var ee *vcpu.ExitError
			if !errors.As(err, &ee) || ee.VCPU != 0 || ee.ExitReason != kvm.ExitShutdown {
				t.Fatalf("error %v is not an ExitError for vCPU 0 SHUTDOWN", err)
			}
			if ee.Sregs.EFER&(1<<10) == 0 || ee.Sregs.CR3 != kvmtest.PML4Addr {
				t.Errorf("EFER %#x CR3 %#x: not the long-mode state at the fault", ee.Sregs.EFER, ee.Sregs.CR3)
			}
		})
	}
}

// TestInt3NoIDT: int3 with an empty IDT triple-faults on hardware KVM; the
// pagetable-based KVM on the development hosts cannot emulate int3 in
// guest kernel mode and reports an emulation failure instead. Either way
// it must end the Group with a descriptive error, never hang.
func TestInt3NoIDT(t *testing.T) {
	vm := kvmtest.NewVM(t, 2<<20, false)
	tables, err := kvmtest.WriteLongModeTables(vm.Mem, 1)
	if err != nil {
		t.Fatal(err)
	}
	vm.Load(t, 0x10000, []byte{
		0xcc,       // int3
		0xeb, 0xfe, // jmp $
	})
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 1, Setup: func(c *kvm.VCPU) error {
		return kvmtest.SetupLongMode(c, tables, 0x10000, kvm.Regs{})
	}})
	if err != nil {
		t.Fatal(err)
	}
	reason, err := waitTimeout(t, g, 2*time.Second)
	if errors.Is(err, vcpu.ErrTripleFault) {
		checkTripleFault(t, reason, err)
		return
	}
	if reason != vcpu.Error || err == nil {
		t.Fatalf("Wait = %v, %v; want an error", reason, err)
	}
	t.Logf("host reports: %v", err)
	for _, s := range []string{"emulation failure", "instruction bytes cc", "rip=0x10000", "efer=0x500", "INTERNAL_ERROR"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
}

func checkTripleFault(t *testing.T, reason vcpu.Reason, err error) {
	t.Helper()
	if reason != vcpu.Error || !errors.Is(err, vcpu.ErrTripleFault) {
		t.Fatalf("Wait = %v, %v; want error wrapping ErrTripleFault", reason, err)
	}
	for _, s := range []string{"guest triple fault", "rip=", "rsp=", "cr0=", "cr3=", "cr4=", "efer=", "SHUTDOWN"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
}

func TestSMP(t *testing.T) {
	const n = 4
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, []byte{
		0xba, 0x10, 0x00, // mov dx, 0x10
		0x88, 0xd8, // mov al, bl   (bl = vCPU id, set by Setup)
		0xee, // out dx, al
		0xf4, // hlt
	})
	dev := &recorder{}
	var pio bus.Bus
	if err := pio.Insert(dev, 0x10, 1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var setupIDs []int
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: n, PIO: &pio, Setup: func(c *kvm.VCPU) error {
		mu.Lock()
		setupIDs = append(setupIDs, c.ID())
		mu.Unlock()
		return realMode(0x1000)(c)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if reason, err := waitTimeout(t, g, 2*time.Second); reason != vcpu.Halted || err != nil {
		t.Fatalf("Wait = %v, %v; want halted", reason, err)
	}
	got := dev.got()
	slices.Sort(got)
	if !slices.Equal(got, []byte{0, 1, 2, 3}) {
		t.Fatalf("vCPU ids written %v, want [0 1 2 3]", got)
	}
	slices.Sort(setupIDs)
	if !slices.Equal(setupIDs, []int{0, 1, 2, 3}) {
		t.Fatalf("Setup ran for %v", setupIDs)
	}
}

func TestSetupError(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, spin)
	_, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 3, Setup: func(c *kvm.VCPU) error {
		if c.ID() == 1 {
			return errors.New("bad cpuid")
		}
		return realMode(0x1000)(c)
	}})
	if err == nil || !strings.Contains(err.Error(), "vcpu 1 setup: bad cpuid") {
		t.Fatalf("Start = %v, want vcpu 1 setup error", err)
	}
	time.Sleep(20 * time.Millisecond)
	if c := counter(t, vm); c != 0 {
		t.Fatalf("a vCPU ran after a failed Start (counter %d)", c)
	}
}

func TestFail(t *testing.T) {
	vm := kvmtest.NewVM(t, 1<<16, false)
	vm.Load(t, 0x1000, spin)
	g, err := vcpu.Start(vcpu.Config{VM: vm.VM, Count: 1, Setup: realMode(0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("device broke")
	g.Fail(boom)
	if reason, err := waitTimeout(t, g, time.Second); reason != vcpu.Error || !errors.Is(err, boom) {
		t.Fatalf("Wait = %v, %v; want error %v", reason, err, boom)
	}
}
