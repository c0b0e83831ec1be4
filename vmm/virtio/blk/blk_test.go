package blk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

const memSize = 8 << 20

type irqRecorder struct {
	mu     sync.Mutex
	n      int
	broken []error
	// efd, when set (> 0), is an eventfd written on every Signal, as the
	// transport's irqfd is.
	efd atomic.Int32
}

func (r *irqRecorder) Signal(bits uint32) error {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
	if fd := r.efd.Load(); fd > 0 {
		_, err := unix.Write(int(fd), []byte{1, 0, 0, 0, 0, 0, 0, 0})
		return err
	}
	return nil
}

type rig struct {
	t    testing.TB
	mem  *guestmem.Memory
	drv  *vt.Driver
	dev  *Block
	kick int
	irq  *irqRecorder
	path string
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>9)
	}
	return b
}

func newRig(t testing.TB, cfg Config, disk []byte, features uint64) *rig {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(cfg.Path, disk, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	loop, err := eventloop.New("test-iothread", eventloop.Thread)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	dev, err := New(cfg, loop)
	if err != nil {
		if cfg.Direct && errors.Is(err, unix.EINVAL) {
			t.Skipf("O_DIRECT not supported on %s", filepath.Dir(cfg.Path))
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	mem := vt.NewMemory(memSize)
	drv := vt.NewDriver(mem, 0x1000, QueueSize, memSize)
	q := virtio.NewQueue(QueueSize)
	drv.Configure(q)
	if features == 0 {
		features = dev.Features() | 1<<virtio.FVersion1
	}
	if err := q.Activate(mem, features); err != nil {
		t.Fatal(err)
	}
	kick, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(kick) })
	r := &rig{t: t, mem: mem, drv: drv, dev: dev, kick: kick, irq: &irqRecorder{}, path: cfg.Path}
	err = dev.Activate(virtio.Activation{Mem: mem, Features: features, Queues: []*virtio.Queue{q}, Kicks: []int{kick},
		Interrupt: r.irq, Broken: func(err error) {
			r.irq.mu.Lock()
			r.irq.broken = append(r.irq.broken, err)
			r.irq.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) header(typ uint32, sector uint64) uint64 {
	a := r.drv.Alloc(16, 8)
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	r.mem.WriteAt(h[:], a)
	return a
}

// submit posts chains (already added), kicks and waits for n completions.
func (r *rig) wait(n int) []vt.Used {
	r.t.Helper()
	unix.Write(r.kick, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	var got []vt.Used
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n {
		got = append(got, r.drv.TakeUsed()...)
		if time.Now().After(deadline) {
			r.t.Fatalf("%d of %d completions after 10s", len(got), n)
		}
		time.Sleep(time.Millisecond)
	}
	return got
}

// rw issues one request with data split into bufs of segLen bytes.
func (r *rig) request(typ uint32, sector uint64, data []byte, segLen int, indirect bool) (status byte, used vt.Used) {
	r.t.Helper()
	bufs := []vt.Buf{{Addr: r.header(typ, sector), Len: 16}}
	var addrs []uint64
	for off := 0; off < len(data); off += segLen {
		n := min(segLen, len(data)-off)
		a := r.drv.Alloc(uint64(n), 512)
		if typ != TypeIn && typ != TypeGetID {
			r.mem.WriteAt(data[off:off+n], a)
		}
		addrs = append(addrs, a)
		bufs = append(bufs, vt.Buf{Addr: a, Len: uint32(n), Write: typ == TypeIn || typ == TypeGetID})
	}
	st := r.drv.Alloc(1, 1)
	r.mem.WriteAt([]byte{0xff}, st)
	bufs = append(bufs, vt.Buf{Addr: st, Len: 1, Write: true})
	if indirect {
		r.drv.AddIndirect(bufs...)
	} else {
		r.drv.AddChain(bufs...)
	}
	u := r.wait(1)[0]
	if typ == TypeIn || typ == TypeGetID {
		for i, a := range addrs {
			n := min(segLen, len(data)-i*segLen)
			r.mem.ReadAt(data[i*segLen:i*segLen+n], a)
		}
	}
	var s [1]byte
	r.mem.ReadAt(s[:], st)
	return s[0], u
}

func TestReadWrite(t *testing.T) { ioModes(t, testReadWrite) }

func testReadWrite(t *testing.T) {
	disk := pattern(1<<20, 1)
	for _, tc := range []struct {
		name     string
		segLen   int
		indirect bool
	}{{"one segment", 64 << 10, false}, {"multi segment", 4096, false}, {"indirect 512-byte segments", 512, true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Config{ID: "d"}, disk, 0)
			got := make([]byte, 64<<10)
			st, u := r.request(TypeIn, 8, got, tc.segLen, tc.indirect)
			if st != StatusOK || u.Len != uint32(len(got))+1 {
				t.Fatalf("read: status %d used len %d", st, u.Len)
			}
			if !bytes.Equal(got, disk[8*512:8*512+len(got)]) {
				t.Fatal("read data differs from the disk")
			}
			w := pattern(32<<10, 9)
			if st, u := r.request(TypeOut, 100, w, tc.segLen, tc.indirect); st != StatusOK || u.Len != 1 {
				t.Fatalf("write: status %d used len %d", st, u.Len)
			}
			if st, _ := r.request(TypeFlush, 0, nil, 1, false); st != StatusOK {
				t.Fatalf("flush: status %d", st)
			}
			f, _ := os.ReadFile(r.path)
			if !bytes.Equal(f[100*512:100*512+len(w)], w) || !bytes.Equal(f[:100*512], disk[:100*512]) {
				t.Fatal("file does not hold the written data")
			}
			if st, _ := r.request(TypeGetID, 0, make([]byte, 20), 20, false); st != StatusOK {
				t.Fatalf("get id: status %d", st)
			}
			// The interrupts are those the transport got (the test driver
			// leaves used_event alone: with EVENT_IDX, the first only).
			r.irq.mu.Lock()
			irqs := r.irq.n
			r.irq.mu.Unlock()
			want := fmt.Sprintf("1 reads (64 KiB), 1 writes (32 KiB), 1 flushes, 1 other requests, %d interrupts", irqs)
			if irqs == 0 {
				t.Error("no interrupt")
			}
			if got := r.dev.stats.String(); got != want {
				t.Errorf("stats: %s, want %s", got, want)
			}
		})
	}
}

func TestRequestErrors(t *testing.T) { ioModes(t, testRequestErrors) }

func testRequestErrors(t *testing.T) {
	r := newRig(t, Config{ID: "d", Serial: "serial-123"}, make([]byte, 64<<10), 0)
	buf := make([]byte, 1024)
	for _, tc := range []struct {
		name   string
		typ    uint32
		sector uint64
		n      int
		want   byte
	}{
		{"read past end", TypeIn, 127, 1024, StatusIOErr},
		{"read last sector", TypeIn, 127, 512, StatusOK},
		{"write past end", TypeOut, 128, 512, StatusIOErr},
		{"huge sector", TypeIn, 1 << 62, 512, StatusIOErr},
		{"partial sector", TypeIn, 0, 100, StatusIOErr},
		{"unknown type", 99, 0, 512, StatusUnsupp},
	} {
		st, _ := r.request(tc.typ, tc.sector, buf[:tc.n], 512, false)
		if st != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.want)
		}
	}
	id := make([]byte, IDBytes)
	st, u := r.request(TypeGetID, 0, id, IDBytes, false)
	if st != StatusOK || u.Len != IDBytes+1 || string(bytes.TrimRight(id, "\x00")) != "serial-123" {
		t.Errorf("GET_ID: status %d len %d id %q", st, u.Len, id)
	}
	// A chain without a status byte or header does not stop the device.
	r.drv.AddChain(vt.Buf{Addr: r.header(TypeIn, 0), Len: 16})
	r.drv.AddChain(vt.Buf{Addr: r.drv.Alloc(8, 8), Len: 8}, vt.Buf{Addr: r.drv.Alloc(1, 1), Len: 1, Write: true})
	if got := r.wait(2); got[0].Len != 0 || got[1].Len != 1 {
		t.Errorf("malformed chains: used %+v", got)
	}
	if st, _ := r.request(TypeIn, 0, buf[:512], 512, false); st != StatusOK {
		t.Error("device stopped after malformed requests")
	}
	if r.dev.Capacity() != 128 {
		t.Errorf("capacity %d, want 128", r.dev.Capacity())
	}
}

func TestReadOnly(t *testing.T) { ioModes(t, testReadOnly) }

func testReadOnly(t *testing.T) {
	disk := pattern(64<<10, 3)
	r := newRig(t, Config{ID: "ro", ReadOnly: true}, disk, 0)
	if !virtio.HasFeature(r.dev.Features(), FRO) || virtio.HasFeature(r.dev.Features(), FWriteZeroes) {
		t.Fatalf("features %#x: want RO and no WRITE_ZEROES", r.dev.Features())
	}
	if st, _ := r.request(TypeOut, 0, make([]byte, 512), 512, false); st != StatusIOErr {
		t.Errorf("write to read-only disk: status %d", st)
	}
	got := make([]byte, 512)
	if st, _ := r.request(TypeIn, 0, got, 512, false); st != StatusOK || !bytes.Equal(got, disk[:512]) {
		t.Errorf("read from read-only disk: status %d", st)
	}
	f, _ := os.ReadFile(r.path)
	if !bytes.Equal(f, disk) {
		t.Error("read-only disk changed")
	}
}

func TestDiscardWriteZeroes(t *testing.T) {
	disk := pattern(1<<20, 5)
	r := newRig(t, Config{ID: "d"}, disk, 0)
	seg := func(sector uint64, n uint32, unmap bool) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, sector)
		binary.LittleEndian.PutUint32(b[8:], n)
		if unmap {
			b[12] = 1
		}
		return b
	}
	if st, _ := r.request(TypeWriteZeroes, 0, seg(8, 16, false), 16, false); st != StatusOK {
		t.Fatalf("write zeroes: status %d", st)
	}
	if st, _ := r.request(TypeWriteZeroes, 0, seg(100, 8, true), 16, false); st != StatusOK {
		t.Fatalf("write zeroes unmap: status %d", st)
	}
	if st, _ := r.request(TypeWriteZeroes, 0, seg(2047, 2, false), 16, false); st != StatusIOErr {
		t.Fatalf("write zeroes past end: status %d", st)
	}
	if virtio.HasFeature(r.dev.Features(), FDiscard) {
		if st, _ := r.request(TypeDiscard, 0, seg(200, 8, false), 16, false); st != StatusOK {
			t.Fatalf("discard: status %d", st)
		}
	}
	f, _ := os.ReadFile(r.path)
	zero := make([]byte, 16*512)
	if !bytes.Equal(f[8*512:24*512], zero) || !bytes.Equal(f[100*512:108*512], zero[:8*512]) {
		t.Error("write zeroes left data")
	}
	if !bytes.Equal(f[:8*512], disk[:8*512]) || !bytes.Equal(f[24*512:100*512], disk[24*512:100*512]) {
		t.Error("write zeroes touched other sectors")
	}
}

func TestDirectBounce(t *testing.T) { ioModes(t, testDirectBounce) }

func testDirectBounce(t *testing.T) {
	dir := os.Getenv("BLK_TEST_DIRECT_DIR") // a file system with O_DIRECT
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "direct.img")
	disk := pattern(256<<10, 7)
	if err := os.WriteFile(path, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	r := newRig(t, Config{ID: "d", Path: path, Direct: true}, nil, 0)
	// 512-byte segments at 512-aligned guest addresses are not page
	// aligned: depending on DIOALIGN they go direct or through the bounce.
	got := make([]byte, 8192)
	if st, _ := r.request(TypeIn, 16, got, 512, false); st != StatusOK || !bytes.Equal(got, disk[16*512:16*512+8192]) {
		t.Fatalf("direct read: status %d", st)
	}
	w := pattern(8192, 11)
	if st, _ := r.request(TypeOut, 32, w, 1536, false); st != StatusOK {
		t.Fatalf("direct write (unaligned segments): status %d", st)
	}
	f, _ := os.ReadFile(path)
	if !bytes.Equal(f[32*512:32*512+8192], w) {
		t.Error("direct write data differs")
	}
}

func TestRateLimit(t *testing.T) {
	r := newRig(t, Config{ID: "d", IOPS: 100}, make([]byte, 1<<20), 0)
	const n = 40 // burst of 10, then 30 at 100/s: about 300 ms
	start := time.Now()
	for i := 0; i < n; i++ {
		r.drv.AddChain(vt.Buf{Addr: r.header(TypeIn, 0), Len: 16},
			vt.Buf{Addr: r.drv.Alloc(512, 512), Len: 512, Write: true}, vt.Buf{Addr: r.drv.Alloc(1, 1), Len: 1, Write: true})
	}
	got := r.wait(n)
	took := time.Since(start)
	if len(got) != n || took < 280*time.Millisecond || took > 2*time.Second {
		t.Errorf("%d requests at iops=100 took %v, want about 300ms", len(got), took)
	}
}

func TestBrokenRing(t *testing.T) {
	r := newRig(t, Config{ID: "d"}, make([]byte, 4096), 0)
	r.drv.SetAvailIdx(1000)
	unix.Write(r.kick, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.irq.mu.Lock()
		n := len(r.irq.broken)
		r.irq.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("device did not report the broken ring")
		}
		time.Sleep(time.Millisecond)
	}
	r.dev.Reset()
}

// FuzzRequest parses arbitrary chains over arbitrary guest memory.
func FuzzRequest(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, []byte{16, 0, 0, 2, 0, 1, 1, 1})
	f.Fuzz(func(t *testing.T, memBytes []byte, layout []byte) {
		mem := vt.NewMemory(4096)
		s, _ := mem.Slice(0, 4096)
		copy(s, memBytes)
		var c virtio.Chain
		for i := 0; i+1 < len(layout) && len(c.Descs) < 16; i += 2 {
			addr := uint64(layout[i]) * 16
			n := uint32(layout[i+1]) * 3
			if !mem.Contains(addr, uint64(n)) {
				continue
			}
			c.Descs = append(c.Descs, virtio.Desc{Addr: addr, Len: n, Write: layout[i+1]&1 == 1})
		}
		r, err := ParseRequest(mem, &c, nil)
		if err != nil {
			return
		}
		if len(r.Status) != 1 {
			t.Fatalf("status buffer of %d bytes", len(r.Status))
		}
		var total uint64
		for _, d := range r.Data {
			total += uint64(len(d))
		}
		if total != r.Len {
			t.Fatalf("Len %d, data %d", r.Len, total)
		}
		_, _ = r.Segments(4)
	})
}
