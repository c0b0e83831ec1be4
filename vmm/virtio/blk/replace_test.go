package blk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// slotRig is a rig around an empty slot, with a counting config notifier.
type slotRig struct {
	*rig
	notified atomic.Int32
}

func newSlotRig(t *testing.T) *slotRig {
	t.Helper()
	loop, err := eventloop.New("test-slot", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	dev, err := NewEmpty("slot0", loop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	r := &slotRig{rig: activate(t, dev)}
	dev.SetConfigNotifier(func() error { r.notified.Add(1); return nil })
	return r
}

// activate sets up one queue with the fake driver and activates dev.
func activate(t *testing.T, dev *Block) *rig {
	t.Helper()
	irq := &irqRecorder{}
	one := vt.ActivateSingleIRQ(t, dev, memSize, QueueSize, irq, func(err error) { t.Errorf("device broken: %v", err) })
	return &rig{t: t, mem: one.Mem, drv: one.Drv, dev: dev, kick: one.Kick, irq: irq}
}

func writeDisk(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func configCapacity(d *Block) (uint64, uint32) {
	var c [24]byte
	d.ReadConfig(0, c[:])
	return binary.LittleEndian.Uint64(c[0:]), binary.LittleEndian.Uint32(c[20:])
}

func (r *rig) serial() (byte, string) {
	r.t.Helper()
	id := make([]byte, IDBytes)
	st, _ := r.request(TypeGetID, 0, id, IDBytes, false)
	return st, string(bytes.TrimRight(id, "\x00"))
}

func TestEmptySlot(t *testing.T) {
	r := newSlotRig(t)
	if r.dev.Plugged() || r.dev.Capacity() != 0 {
		t.Fatalf("empty slot: plugged %v, capacity %d", r.dev.Plugged(), r.dev.Capacity())
	}
	if c, bs := configCapacity(r.dev); c != 0 || bs != SectorSize {
		t.Errorf("config space: capacity %d, blk_size %d; want 0, 512", c, bs)
	}
	if virtio.HasFeature(r.dev.Features(), FRO) || !virtio.HasFeature(r.dev.Features(), FDiscard) {
		t.Errorf("slot features %#x: want writable with discard", r.dev.Features())
	}
	buf := make([]byte, 512)
	for _, tc := range []struct {
		name string
		typ  uint32
		data []byte
		want byte
	}{
		{"read", TypeIn, buf, StatusIOErr},
		{"zero-length read", TypeIn, nil, StatusIOErr},
		{"write", TypeOut, buf, StatusIOErr},
		{"flush", TypeFlush, nil, StatusIOErr},
	} {
		if st, _ := r.request(tc.typ, 0, tc.data, 512, false); st != tc.want {
			t.Errorf("%s on an empty slot: status %d, want %d", tc.name, st, tc.want)
		}
	}
	if st, s := r.serial(); st != StatusOK || s != "" {
		t.Errorf("GET_ID on an empty slot: status %d serial %q, want OK and empty", st, s)
	}
	if err := r.dev.Unplug("slot0"); !errors.Is(err, ErrNoBackend) {
		t.Errorf("unplug of an empty slot: %v, want ErrNoBackend", err)
	}
	if r.notified.Load() != 0 {
		t.Errorf("%d config interrupts without a change", r.notified.Load())
	}
}

func TestPlugUnplug(t *testing.T) { ioModes(t, testPlugUnplug) }

func testPlugUnplug(t *testing.T) {
	r := newSlotRig(t)
	disk := pattern(1<<20, 3)
	path := writeDisk(t, disk)
	if err := r.dev.Plug(Config{ID: "data1", Path: path, Serial: "serial-data1"}); err != nil {
		t.Fatal(err)
	}
	if n := r.notified.Load(); n != 1 {
		t.Errorf("plug raised %d config interrupts, want 1", n)
	}
	if c, _ := configCapacity(r.dev); c != 2048 || r.dev.ID() != "data1" || r.dev.Serial() != "serial-data1" {
		t.Errorf("after plug: capacity %d id %q serial %q", c, r.dev.ID(), r.dev.Serial())
	}
	if st, s := r.serial(); st != StatusOK || s != "serial-data1" {
		t.Errorf("GET_ID: status %d serial %q", st, s)
	}
	got := make([]byte, 4096)
	if st, _ := r.request(TypeIn, 2040, got, 4096, false); st != StatusOK || !bytes.Equal(got, disk[2040*512:]) {
		t.Fatalf("read after plug: status %d", st)
	}
	w := pattern(4096, 8)
	if st, _ := r.request(TypeOut, 10, w, 4096, false); st != StatusOK {
		t.Fatalf("write after plug: status %d", st)
	}
	if err := r.dev.Plug(Config{ID: "x", Path: path}); !errors.Is(err, ErrPlugged) {
		t.Errorf("second plug: %v, want ErrPlugged", err)
	}

	if err := r.dev.Unplug("slot0"); err != nil {
		t.Fatal(err)
	}
	if n := r.notified.Load(); n != 2 {
		t.Errorf("unplug: %d config interrupts in all, want 2", n)
	}
	if c, _ := configCapacity(r.dev); c != 0 || r.dev.Plugged() || r.dev.ID() != "slot0" {
		t.Errorf("after unplug: capacity %d plugged %v id %q", c, r.dev.Plugged(), r.dev.ID())
	}
	if st, _ := r.request(TypeIn, 0, got[:512], 512, false); st != StatusIOErr {
		t.Errorf("read after unplug: status %d, want IOERR", st)
	}
	if st, s := r.serial(); st != StatusOK || s != "" {
		t.Errorf("GET_ID after unplug: status %d serial %q", st, s)
	}
	f, _ := os.ReadFile(path)
	if !bytes.Equal(f[10*512:10*512+4096], w) {
		t.Error("write did not reach the file")
	}

	// A second disk in the same slot, read-only.
	disk2 := pattern(64<<10, 9)
	path2 := writeDisk(t, disk2)
	if err := r.dev.Plug(Config{ID: "data2", Path: path2, ReadOnly: true, Serial: "s2"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := configCapacity(r.dev); c != 128 {
		t.Errorf("second disk: capacity %d, want 128", c)
	}
	if st, _ := r.request(TypeIn, 0, got, 4096, false); st != StatusOK || !bytes.Equal(got, disk2[:4096]) {
		t.Errorf("read of the second disk: status %d", st)
	}
	if st, s := r.serial(); s != "s2" {
		t.Errorf("second serial: status %d %q", st, s)
	}
	seg := make([]byte, 16)
	binary.LittleEndian.PutUint32(seg[8:], 8)
	for _, tc := range []struct {
		name string
		typ  uint32
		data []byte
	}{{"write", TypeOut, w}, {"discard", TypeDiscard, seg}, {"write zeroes", TypeWriteZeroes, seg}} {
		if st, _ := r.request(tc.typ, 0, tc.data, len(tc.data), false); st != StatusIOErr {
			t.Errorf("%s on a read-only disk in a writable slot: status %d, want IOERR", tc.name, st)
		}
	}
	if f, _ := os.ReadFile(path2); !bytes.Equal(f, disk2) {
		t.Error("read-only disk changed")
	}
}

func TestPlugErrors(t *testing.T) {
	r := newSlotRig(t)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"missing file", Config{ID: "a", Path: filepath.Join(t.TempDir(), "nope")}},
		{"directory", Config{ID: "a", Path: t.TempDir()}},
		{"character device", Config{ID: "a", Path: "/dev/null"}},
	} {
		if err := r.dev.Plug(tc.cfg); err == nil {
			t.Errorf("%s: plugged", tc.name)
		}
	}
	if r.dev.Plugged() || r.notified.Load() != 0 {
		t.Errorf("failed plugs changed the slot: plugged %v, %d interrupts", r.dev.Plugged(), r.notified.Load())
	}
}

// A cold-plugged disk can be unplugged and its slot reused.
func TestUnplugColdDisk(t *testing.T) {
	r := newRig(t, Config{ID: "root", Serial: "root"}, pattern(8192, 1), 0)
	if err := r.dev.Unplug("slot"); err != nil {
		t.Fatal(err)
	}
	if r.dev.Capacity() != 0 {
		t.Errorf("capacity %d after unplug", r.dev.Capacity())
	}
	if st, _ := r.request(TypeIn, 0, make([]byte, 512), 512, false); st != StatusIOErr {
		t.Errorf("read: status %d", st)
	}
	disk := pattern(16384, 4)
	if err := r.dev.Plug(Config{ID: "new", Path: writeDisk(t, disk)}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16384)
	if st, _ := r.request(TypeIn, 0, got, 4096, false); st != StatusOK || !bytes.Equal(got, disk) {
		t.Errorf("read of the replacement: status %d", st)
	}
}

// Plug and unplug race with a stream of requests: each completes, with
// either OK and the disk's data or IOERR, and the race detector watches.
func TestReplaceUnderLoad(t *testing.T) { ioModes(t, testReplaceUnderLoad) }

func testReplaceUnderLoad(t *testing.T) {
	r := newSlotRig(t)
	disk := pattern(64<<10, 6)
	path := writeDisk(t, disk)
	hdr := r.header(TypeIn, 4)
	data := r.drv.Alloc(4096, 512)
	st := r.drv.Alloc(1, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := r.dev.Plug(Config{ID: "d", Path: path, Serial: "s"}); err != nil {
				t.Errorf("plug %d: %v", i, err)
				return
			}
			if err := r.dev.Unplug("slot0"); err != nil {
				t.Errorf("unplug %d: %v", i, err)
				return
			}
		}
	}()
	var ok, failed int
	buf := make([]byte, 4096)
	for range 300 {
		r.mem.WriteAt([]byte{0xff}, st)
		r.drv.AddChain(vt.Buf{Addr: hdr, Len: 16}, vt.Buf{Addr: data, Len: 4096, Write: true}, vt.Buf{Addr: st, Len: 1, Write: true})
		r.wait(1)
		var s [1]byte
		r.mem.ReadAt(s[:], st)
		switch s[0] {
		case StatusOK:
			ok++
			r.mem.ReadAt(buf, data)
			if !bytes.Equal(buf, disk[4*512:4*512+4096]) {
				t.Fatal("OK read returned wrong data")
			}
		case StatusIOErr:
			failed++
		default:
			t.Fatalf("status %d", s[0])
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d reads OK, %d failed while replacing", ok, failed)
}
