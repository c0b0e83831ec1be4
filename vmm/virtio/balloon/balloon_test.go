package balloon

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

const memSize = 16 << 20

type irqs struct {
	mu     sync.Mutex
	broken []error
}

func (r *irqs) Signal(uint32) error { return nil }

type rig struct {
	t     *testing.T
	mem   *guestmem.Memory
	drv   []*vt.Driver
	kicks []int
	dev   *Balloon
	irq   *irqs
}

func newRig(t *testing.T, cfg Config, shared bool) *rig {
	t.Helper()
	mem, err := guestmem.New([]guestmem.Range{{GPA: 0, Size: memSize}}, guestmem.Options{Shared: shared, DumpGuestCore: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	loop, err := eventloop.New("test-balloon", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	r := &rig{t: t, mem: mem, dev: New(cfg, loop), irq: &irqs{}}
	t.Cleanup(func() { r.dev.Close() })
	var qs []*virtio.Queue
	for i := range r.dev.ActiveQueues(r.dev.Features()) {
		base := uint64(i) << 20
		d := vt.NewDriver(mem, base, QueueSize, base+1<<20)
		q := virtio.NewQueue(QueueSize)
		d.Configure(q)
		if err := q.Activate(mem, r.dev.Features()|1<<virtio.FVersion1); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		r.drv, r.kicks, qs = append(r.drv, d), append(r.kicks, fd), append(qs, q)
	}
	err = r.dev.Activate(virtio.Activation{Mem: mem, Features: r.dev.Features(), Queues: qs, Kicks: r.kicks, Interrupt: r.irq,
		Broken: func(err error) { r.irq.mu.Lock(); r.irq.broken = append(r.irq.broken, err); r.irq.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) kick(q int) {
	unix.Write(r.kicks[q], []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

// sendPFNs posts one buffer of PFNs on q and waits for its completion.
func (r *rig) sendPFNs(q int, pfns []uint32) {
	r.t.Helper()
	b := make([]byte, 4*len(pfns))
	for i, p := range pfns {
		binary.LittleEndian.PutUint32(b[4*i:], p)
	}
	d := r.drv[q]
	a := d.Alloc(uint64(len(b)), 4)
	r.mem.WriteAt(b, a)
	d.AddChain(vt.Buf{Addr: a, Len: uint32(len(b))})
	r.kick(q)
	r.waitUsed(q, 1)
}

func (r *rig) waitUsed(q, n int) []vt.Used {
	r.t.Helper()
	var got []vt.Used
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		got = append(got, r.drv[q].TakeUsed()...)
		if len(got) >= n {
			return got
		}
	}
	r.t.Fatalf("queue %d: %d completions, want %d", q, len(got), n)
	return nil
}

func TestInflateReleasesPages(t *testing.T) {
	for _, shared := range []bool{false, true} {
		r := newRig(t, Config{Shared: shared}, shared)
		fill := bytes.Repeat([]byte{0xaa}, 64*PageSize)
		r.mem.WriteAt(fill, 8<<20) // pages 2048..2111
		// Pages 2048-2057 and 2060, plus one PFN beyond RAM.
		pfns := []uint32{2048, 2049, 2050, 2051, 2052, 2053, 2054, 2055, 2056, 2057, 2060, 1 << 30}
		r.sendPFNs(inflateQ, pfns)
		got := make([]byte, 64*PageSize)
		r.mem.ReadAt(got, 8<<20)
		for p := range 64 {
			page := got[p*PageSize : (p+1)*PageSize]
			released := p <= 9 || p == 12
			if zero := page[0] == 0 && page[PageSize-1] == 0; zero != released {
				t.Errorf("shared=%v page %d: zero=%v, want released=%v", shared, 2048+p, zero, released)
			}
		}
		if in, _ := r.dev.Counters(); in != 11 {
			t.Errorf("shared=%v: %d pages released, want 11", shared, in)
		}
		r.sendPFNs(deflateQ, []uint32{2048, 2049})
		if _, de := r.dev.Counters(); de != 2 {
			t.Errorf("deflated %d, want 2", de)
		}
		if len(r.irq.broken) != 0 {
			t.Fatal(r.irq.broken)
		}
	}
}

func TestFreePageReporting(t *testing.T) {
	for _, shared := range []bool{false, true} {
		r := newRig(t, Config{FreePageReporting: true, Shared: shared}, shared)
		if len(r.drv) != 4 {
			t.Fatalf("%d queues with reporting, want 4", len(r.drv))
		}
		const base = 10 << 20
		r.mem.WriteAt(bytes.Repeat([]byte{0xaa}, 4<<20), base)
		d := r.drv[reportQ]
		// A 2 MiB block (Linux's report), a range with unaligned edges of
		// which only the page inside goes, and one within a page.
		d.AddChain(vt.Buf{Addr: base, Len: 2 << 20, Write: true},
			vt.Buf{Addr: base + 3<<20 - 100, Len: PageSize + 200, Write: true},
			vt.Buf{Addr: base + 3<<20 + 2*PageSize + 8, Len: 100, Write: true})
		r.kick(reportQ)
		if u := r.waitUsed(reportQ, 1); u[0].Len != 0 {
			t.Errorf("shared=%v: used length %d, want 0", shared, u[0].Len)
		}
		got := make([]byte, 4<<20)
		r.mem.ReadAt(got, base)
		for p := range len(got) / PageSize {
			page := got[p*PageSize : (p+1)*PageSize]
			released := p < 512 || p == 768
			if zero := page[0] == 0 && page[PageSize-1] == 0; zero != released {
				t.Errorf("shared=%v page %d of the range: zero=%v, want released=%v", shared, p, zero, released)
			}
		}
		if n := r.dev.Reported(); n != 2<<20+PageSize {
			t.Errorf("shared=%v: %d bytes reported, want %d", shared, n, 2<<20+PageSize)
		}
		if in, _ := r.dev.Counters(); in != 0 {
			t.Errorf("shared=%v: reports counted as %d inflated pages", shared, in)
		}
		if len(r.irq.broken) != 0 {
			t.Fatal(r.irq.broken)
		}
	}
}

func TestActiveQueues(t *testing.T) {
	for _, tc := range []struct {
		reporting, negotiated bool
		want                  int
	}{
		{false, false, 3},
		{false, true, 3},
		{true, false, 3},
		{true, true, 4},
	} {
		b := New(Config{FreePageReporting: tc.reporting}, nil)
		var f uint64 = 1 << FStatsVQ
		if tc.negotiated {
			f |= 1 << FReporting
		}
		if got := b.ActiveQueues(f); got != tc.want {
			t.Errorf("reporting %v, negotiated %v: %d queues, want %d", tc.reporting, tc.negotiated, got, tc.want)
		}
		if offered := b.Features()&(1<<FReporting) != 0; offered != tc.reporting {
			t.Errorf("reporting %v: feature offered %v", tc.reporting, offered)
		}
		if n := len(b.QueueMaxSizes()); n != 3 && !tc.reporting || n != 4 && tc.reporting {
			t.Errorf("reporting %v: %d queues", tc.reporting, n)
		}
	}
}

func TestPageRange(t *testing.T) {
	for _, tc := range []struct {
		addr, size uint64
		want       Range
		ok         bool
	}{
		{0, PageSize, Range{0, PageSize}, true},
		{2 << 20, 2 << 20, Range{2 << 20, 2 << 20}, true},
		{1, PageSize, Range{}, false},
		{PageSize - 1, PageSize + 2, Range{PageSize, PageSize}, true},
		{PageSize, PageSize - 1, Range{}, false},
		{0, 0, Range{}, false},
		{^uint64(0) - 10, 100, Range{}, false},
		{^uint64(0) &^ (PageSize - 1), PageSize - 1, Range{}, false},
	} {
		got, ok := pageRange(tc.addr, tc.size)
		if ok != tc.ok || got != tc.want {
			t.Errorf("pageRange(%#x, %#x) = %+v, %v; want %+v, %v", tc.addr, tc.size, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMalformedPFNBufferIsCompleted(t *testing.T) {
	r := newRig(t, Config{}, false)
	d := r.drv[inflateQ]
	a := d.Alloc(6, 4)
	d.AddChain(vt.Buf{Addr: a, Len: 6}) // not a multiple of 4
	r.kick(inflateQ)
	r.waitUsed(inflateQ, 1)
	if in, _ := r.dev.Counters(); in != 0 {
		t.Errorf("released %d pages from a malformed buffer", in)
	}
}

func TestConfigSpace(t *testing.T) {
	var seen []uint32
	r := newRig(t, Config{DeflateOnOOM: true, OnActual: func(p uint32) { seen = append(seen, p) }}, false)
	if r.dev.Features()&(1<<FDeflateOnOOM) == 0 || r.dev.Features()&(1<<FStatsVQ) == 0 {
		t.Errorf("features %#x", r.dev.Features())
	}
	if New(Config{}, nil).Features()&(1<<FDeflateOnOOM) != 0 {
		t.Error("DEFLATE_ON_OOM offered without deflate-on-oom")
	}
	r.dev.SetTarget(65536)
	b := make([]byte, 4)
	r.dev.ReadConfig(0, b)
	if binary.LittleEndian.Uint32(b) != 65536 {
		t.Errorf("num_pages %x", b)
	}
	r.dev.WriteConfig(0, []byte{1, 0, 0, 0}) // num_pages is read-only
	binary.LittleEndian.PutUint32(b, 1000)
	r.dev.WriteConfig(4, b)
	if r.dev.Actual() != 1000 || r.dev.Target() != 65536 {
		t.Errorf("actual %d target %d", r.dev.Actual(), r.dev.Target())
	}
	r.dev.WriteConfig(5, []byte{1}) // byte write: 0x3e8 becomes 0x1e8
	if r.dev.Actual() != 0x1e8 {
		t.Errorf("actual after byte write %d", r.dev.Actual())
	}
	if len(seen) != 2 || seen[0] != 1000 {
		t.Errorf("OnActual calls %v", seen)
	}
}

func TestStats(t *testing.T) {
	r := newRig(t, Config{}, false)
	buf := make([]byte, 20)
	binary.LittleEndian.PutUint16(buf[0:], 4) // free memory
	binary.LittleEndian.PutUint64(buf[2:], 123<<20)
	binary.LittleEndian.PutUint16(buf[10:], 5) // total memory
	binary.LittleEndian.PutUint64(buf[12:], 512<<20)
	d := r.drv[statsQ]
	a := d.Alloc(20, 8)
	r.mem.WriteAt(buf, a)
	head := d.AddChain(vt.Buf{Addr: a, Len: 20})
	r.kick(statsQ)
	var st []Stat
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && len(st) == 0; time.Sleep(time.Millisecond) {
		st = r.dev.Stats()
	}
	if len(st) != 2 || st[0] != (Stat{4, 123 << 20}) || st[1] != (Stat{5, 512 << 20}) || StatName(4) != "free-memory" {
		t.Fatalf("stats %+v", st)
	}
	if u := d.TakeUsed(); len(u) != 0 {
		t.Fatalf("stats buffer completed before it was requested: %v", u)
	}
	r.dev.RequestStats()
	if u := r.waitUsed(statsQ, 1); u[0].ID != uint32(head) {
		t.Fatalf("completed %v, want head %d", u, head)
	}
}

func TestRanges(t *testing.T) {
	got := Ranges([]uint32{1, 2, 3, 5, 4, 5, 7}, nil)
	want := []Range{{PageSize, 3 * PageSize}, {5 * PageSize, PageSize}, {4 * PageSize, 2 * PageSize}, {7 * PageSize, PageSize}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
}

func FuzzAppendPFNs(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 0})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		pfns, err := AppendPFNs(nil, b)
		if err != nil {
			return
		}
		if len(pfns) != len(b)/4 || len(pfns) > MaxPFNsPerChain {
			t.Fatalf("%d PFNs from %d bytes", len(pfns), len(b))
		}
		var n uint64
		for _, r := range Ranges(pfns, nil) {
			n += r.Size
		}
		if n != uint64(len(pfns))*PageSize {
			t.Fatalf("ranges cover %d bytes for %d pages", n, len(pfns))
		}
	})
}

func FuzzParseStats(f *testing.F) {
	f.Add(make([]byte, 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStats(b)
		if err == nil && len(st)*statSize != len(b) {
			t.Fatalf("%d stats from %d bytes", len(st), len(b))
		}
	})
}

// FuzzPageRange: a reported range gives only whole pages inside it.
func FuzzPageRange(f *testing.F) {
	f.Add(uint64(2<<20), uint64(2<<20))
	f.Add(uint64(4095), uint64(8194))
	f.Add(^uint64(0)-100, uint64(200))
	f.Fuzz(func(t *testing.T, addr, size uint64) {
		r, ok := pageRange(addr, size)
		if !ok {
			return
		}
		if r.GPA%PageSize != 0 || r.Size%PageSize != 0 || r.Size == 0 {
			t.Fatalf("pageRange(%#x, %#x) = %+v: not whole pages", addr, size, r)
		}
		if r.GPA < addr || r.GPA+r.Size < r.GPA || r.GPA+r.Size > addr+size || addr+size < addr {
			t.Fatalf("pageRange(%#x, %#x) = %+v: outside the range", addr, size, r)
		}
	})
}
