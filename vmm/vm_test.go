package vmm

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/payload"
	"github.com/stratovirt-go/stratovirt/vmm/arch/amd64"
	"github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/vcpu"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

func needKVM(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	f.Close()
}

// recorder collects 4-byte writes to the payload debug port.
type recorder struct {
	mu   sync.Mutex
	vals []uint32
}

func (r *recorder) Read(_ uint64, data []byte) {}
func (r *recorder) Write(_ uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b [4]byte
	copy(b[:], data)
	r.vals = append(r.vals, binary.LittleEndian.Uint32(b[:]))
}

func payloadConfig(t *testing.T, code []byte, vcpus int, mem uint64) *config.VMConfig {
	t.Helper()
	kernel := filepath.Join(t.TempDir(), "payload.elf")
	if err := os.WriteFile(kernel, payload.ELF(code), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Machine.VCPUs = vcpus
	cfg.Machine.MemSize = mem
	cfg.Boot.Kernel = kernel
	cfg.Boot.Cmdline = "console=ttyS0 test"
	return &cfg
}

func runPayload(t *testing.T, cfg *config.VMConfig, opts Options, timeout time.Duration, setup func(*VM)) (Reason, error) {
	t.Helper()
	v, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if setup != nil {
		setup(v)
	}
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(timeout, func() { v.Stop(Stopped) })
	defer timer.Stop()
	return v.Wait()
}

// TestBootState checks, from inside the guest, the state the 64-bit Linux
// boot protocol promises the kernel at its entry.
func TestBootState(t *testing.T) {
	needKVM(t)
	for _, mem := range []uint64{256 << 20, 5 << 30} {
		rec := &recorder{}
		cfg := payloadConfig(t, payload.BootState(), 1, mem)
		reason, err := runPayload(t, cfg, Options{}, 20*time.Second, func(v *VM) {
			if err := v.pio.Insert(rec, payload.DebugPort, 4); err != nil {
				t.Fatal(err)
			}
		})
		if err != nil || reason != PowerOff {
			t.Fatalf("mem %d: VM ended with %v, %v; want power-off", mem, reason, err)
		}
		v := rec.vals
		if len(v) != 11 {
			t.Fatalf("payload reported %d values (%x), want 11", len(v), v)
		}
		checks := []struct {
			name string
			ok   bool
		}{
			{"rsi = zero page", v[0] == amd64.ZeroPageAddr},
			{"e820 entries >= 3", v[1] >= 3 && v[1] <= 128},
			{"cr0 PE|PG", v[2]&1 != 0 && v[2]&(1<<31) != 0},
			{"cr3 = page tables", uint64(v[3]) == amd64.PML4Addr},
			{"cr4 PAE", v[4]&(1<<5) != 0},
			{"efer LME|LMA", v[5]&0x500 == 0x500},
			{"cs = boot code selector", v[6] == amd64.BootCodeSelector},
			{"rsp = boot stack", v[7] == amd64.BootStackAddr},
			{"gdt base", v[8] == amd64.GDTAddr},
			{"cmd_line_ptr", v[9] == amd64.CmdlineAddr},
			{"cmdline text", string(binary.LittleEndian.AppendUint32(nil, v[10])) == "cons"},
		}
		for _, c := range checks {
			if !c.ok {
				t.Errorf("mem %d: %s: reported %#x", mem, c.name, v)
			}
		}
	}
}

func TestSerialOutputAndPowerOff(t *testing.T) {
	needKVM(t)
	var out strings.Builder
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	reason, err := runPayload(t, payloadConfig(t, payload.Output(), 1, 256<<20), Options{SerialOut: w}, 20*time.Second, nil)
	if err != nil || reason != PowerOff {
		t.Fatalf("VM ended with %v, %v", reason, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if out.String() != "ok\n" {
		t.Fatalf("serial output %q, want %q", out.String(), "ok\n")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestTripleFault(t *testing.T) {
	needKVM(t)
	reason, err := runPayload(t, payloadConfig(t, payload.TripleFault(), 1, 256<<20), Options{}, 20*time.Second, nil)
	if reason != Error || !errors.Is(err, vcpu.ErrTripleFault) {
		t.Fatalf("got %v, %v; want a triple-fault error", reason, err)
	}
	if !strings.Contains(err.Error(), "rip") && !strings.Contains(err.Error(), "RIP") {
		t.Errorf("error lacks registers: %v", err)
	}
}

func TestStopPauseResume(t *testing.T) {
	needKVM(t)
	v, err := New(payloadConfig(t, payload.Spin(), 2, 256<<20), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v.Stop(Stopped)
	r, err := v.Wait()
	if r != Stopped || err != nil {
		t.Fatalf("Wait = %v, %v", r, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("stop took %v", d)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "not-a-kernel")
	os.WriteFile(notKernel, []byte("this is not a kernel image at all, just some text"), 0o644)
	cfg := config.Default()
	cfg.Boot.Kernel = notKernel
	if _, err := os.Stat("/dev/kvm"); err == nil {
		_, err := New(&cfg, Options{})
		if err == nil || !strings.Contains(err.Error(), "not a bzImage or an ELF") {
			t.Errorf("non-kernel image: %v", err)
		}
	}
	cfg.Machine.VCPUs = 255
	if _, err := New(&cfg, Options{}); err == nil || !strings.Contains(err.Error(), "[1, 254]") {
		t.Errorf("255 vCPUs: %v", err)
	}
	cfg.Machine.VCPUs = 1
	cfg.Boot.Kernel = filepath.Join(dir, "missing")
	if _, err := New(&cfg, Options{KVMDevice: "/dev/kvm"}); err == nil {
		t.Error("missing kernel accepted")
	}
}

// TestPmem reads and writes a virtio-pmem region from a guest: it starts
// with the file's bytes, a read-only device keeps the guest's write from
// the file and a shared one passes it through.
func TestPmem(t *testing.T) {
	needKVM(t)
	for _, ro := range []bool{true, false} {
		file := filepath.Join(t.TempDir(), "pmem.img")
		if err := os.WriteFile(file, []byte("PMEM and then some"), 0o644); err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		cfg := payloadConfig(t, payload.PmemReadWrite(), 1, 256<<20)
		cfg.Pmems = []config.Pmem{{ID: "pmem0", File: file, ReadOnly: ro}}
		reason, err := runPayload(t, cfg, Options{}, 20*time.Second, func(v *VM) {
			if err := v.pio.Insert(rec, payload.DebugPort, 4); err != nil {
				t.Fatal(err)
			}
		})
		if err != nil || reason != PowerOff {
			t.Fatalf("read-only %v: VM ended with %v, %v; want power-off", ro, reason, err)
		}
		if want := []uint32{binary.LittleEndian.Uint32([]byte("PMEM")), 0x12345678}; len(rec.vals) != 2 || rec.vals[0] != want[0] || rec.vals[1] != want[1] {
			t.Fatalf("read-only %v: guest read %#x, want %#x", ro, rec.vals, want)
		}
		got, _ := os.ReadFile(file)
		if wantFile := map[bool]string{true: "PMEM", false: "\x78\x56\x34\x12"}[ro]; string(got[:4]) != wantFile {
			t.Errorf("read-only %v: file starts with %q, want %q", ro, got[:4], wantFile)
		}
	}
}

// TestInterruptACKInKernel: a guest's acknowledgement of the vring bit
// alone is taken by the kernel (an ioeventfd) and never reaches the VMM,
// while any other acknowledgement does and clears its bits.
func TestInterruptACKInKernel(t *testing.T) {
	needKVM(t)
	if payload.VirtioWindow0 != amd64.VirtioMMIOBase {
		t.Fatalf("payload window %#x, VMM's %#x", payload.VirtioWindow0, amd64.VirtioMMIOBase)
	}
	file := filepath.Join(t.TempDir(), "pmem.img")
	if err := os.WriteFile(file, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	cfg := payloadConfig(t, payload.VirtioACK(), 1, 256<<20)
	cfg.Pmems = []config.Pmem{{ID: "pmem0", File: file}}
	var status *uint32
	reason, err := runPayload(t, cfg, Options{}, 20*time.Second, func(v *VM) {
		if err := v.pio.Insert(rec, payload.DebugPort, 4); err != nil {
			t.Fatal(err)
		}
		s := v.virtio.slots[0]
		if s.base != payload.VirtioWindow0 {
			t.Fatalf("first window at %#x", s.base)
		}
		// Both bits pending, as if signalled before the driver started:
		// only a write that reaches the VMM clears one.
		status, _ = s.transport.InterruptWords()
		atomic.StoreUint32(status, virtio.InterruptVring|virtio.InterruptConfig)
	})
	if err != nil || reason != PowerOff {
		t.Fatalf("VM ended with %v, %v; want power-off", reason, err)
	}
	if len(rec.vals) != 1 || rec.vals[0] != virtio.InterruptVring {
		t.Fatalf("guest read InterruptStatus %#x, want only the vring bit left", rec.vals)
	}
	if got := atomic.LoadUint32(status); got != virtio.InterruptVring {
		t.Errorf("status word %#x after the ACKs of 1 and 2, want %#x", got, virtio.InterruptVring)
	}
}
