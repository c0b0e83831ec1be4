package virtio_test

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

const memSize = 1 << 20

func setup(t testing.TB, size uint16, features uint64) (*vt.Driver, *virtio.Queue) {
	t.Helper()
	mem := vt.NewMemory(memSize)
	d := vt.NewDriver(mem, 0x1000, size, memSize)
	q := virtio.NewQueue(size)
	d.Configure(q)
	if err := q.Activate(mem, features); err != nil {
		t.Fatal(err)
	}
	return d, q
}

func TestPopDirectAndIndirect(t *testing.T) {
	d, q := setup(t, 16, 1<<virtio.FIndirectDesc)
	a, b, c := d.Alloc(16, 8), d.Alloc(4096, 4096), d.Alloc(1, 1)
	h1 := d.AddChain(vt.Buf{Addr: a, Len: 16}, vt.Buf{Addr: b, Len: 4096, Write: true}, vt.Buf{Addr: c, Len: 1, Write: true})
	h2 := d.AddIndirect(vt.Buf{Addr: a, Len: 16}, vt.Buf{Addr: b, Len: 512}, vt.Buf{Addr: c, Len: 1, Write: true})
	var ch virtio.Chain
	for _, want := range []struct {
		head  uint16
		descs []virtio.Desc
	}{
		{h1, []virtio.Desc{{a, 16, false}, {b, 4096, true}, {c, 1, true}}},
		{h2, []virtio.Desc{{a, 16, false}, {b, 512, false}, {c, 1, true}}},
	} {
		ok, err := q.Pop(&ch)
		if !ok || err != nil {
			t.Fatalf("Pop = %v, %v", ok, err)
		}
		if ch.Head != want.head || !reflect.DeepEqual(ch.Descs, want.descs) {
			t.Errorf("chain %d %+v, want %d %+v", ch.Head, ch.Descs, want.head, want.descs)
		}
	}
	if ok, err := q.Pop(&ch); ok || err != nil {
		t.Fatalf("empty queue: Pop = %v, %v", ok, err)
	}
	// Undo returns the last chain again.
	q.Undo()
	if ok, _ := q.Pop(&ch); !ok || ch.Head != h2 {
		t.Fatalf("after Undo: head %d, want %d", ch.Head, h2)
	}
}

func TestUsedRingAndInterrupts(t *testing.T) {
	d, q := setup(t, 8, 0)
	buf := d.Alloc(64, 8)
	var ch virtio.Chain
	for i := 0; i < 3; i++ {
		d.AddChain(vt.Buf{Addr: buf, Len: 64, Write: true})
	}
	for i := 0; i < 3; i++ {
		if ok, err := q.Pop(&ch); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if err := q.Push(ch.Head, uint32(10+i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.TakeUsed(); len(got) != 0 {
		t.Fatalf("used visible before Flush: %v", got)
	}
	need, err := q.Flush()
	if err != nil || !need {
		t.Fatalf("Flush = %v, %v; want interrupt", need, err)
	}
	if got, want := d.TakeUsed(), []vt.Used{{ID: 0, Len: 10}, {ID: 1, Len: 11}, {ID: 2, Len: 12}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("used %v, want %v", got, want)
	}
	// NO_INTERRUPT suppresses; nothing new means no interrupt either.
	d.SetAvailFlags(1)
	d.AddChain(vt.Buf{Addr: buf, Len: 64, Write: true})
	q.Pop(&ch)
	q.Push(ch.Head, 1)
	if need, _ := q.Flush(); need {
		t.Error("interrupt despite VRING_AVAIL_F_NO_INTERRUPT")
	}
	if need, _ := q.Flush(); need {
		t.Error("interrupt with nothing new")
	}
}

func TestEventIdx(t *testing.T) {
	d, q := setup(t, 8, 1<<virtio.FEventIdx)
	buf := d.Alloc(64, 8)
	var ch virtio.Chain
	complete := func(n int) bool {
		for i := 0; i < n; i++ {
			d.AddChain(vt.Buf{Addr: buf, Len: 64, Write: true})
			if ok, err := q.Pop(&ch); !ok || err != nil {
				t.Fatal(ok, err)
			}
			q.Push(ch.Head, 0)
		}
		need, err := q.Flush()
		if err != nil {
			t.Fatal(err)
		}
		return need
	}
	d.SetUsedEvent(0) // interrupt when used.idx passes 0
	if !complete(1) {
		t.Error("crossing used_event 0 must interrupt")
	}
	d.SetUsedEvent(5) // not until the 6th completion
	if complete(2) {
		t.Error("interrupt before used_event reached")
	}
	if !complete(3) { // used.idx goes 3 -> 6, crossing 5
		t.Error("no interrupt when used_event crossed")
	}
	// ArmNotify publishes avail_event and reports work that raced in.
	if ok, _ := q.Pop(&ch); ok {
		t.Fatal("queue should be empty")
	}
	more, err := q.ArmNotify()
	if err != nil || more {
		t.Fatalf("ArmNotify on empty queue = %v, %v", more, err)
	}
	if got := d.AvailEvent(); got != q.NextAvail() {
		t.Errorf("avail_event %d, want %d", got, q.NextAvail())
	}
	d.AddChain(vt.Buf{Addr: buf, Len: 64, Write: true})
	if more, _ := q.ArmNotify(); !more {
		t.Error("ArmNotify missed a buffer added without a kick")
	}
}

func TestMaliciousRings(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
		corrupt  func(d *vt.Driver)
	}{
		{"avail idx far ahead", 0, func(d *vt.Driver) { d.SetAvailIdx(100) }},
		{"head out of range", 0, func(d *vt.Driver) { d.PublishHead(8) }},
		{"next out of range", 0, func(d *vt.Driver) {
			d.WriteDesc(d.Desc, 0, 0x9000, 16, vt.FlagNext, 9)
			d.PublishHead(0)
		}},
		{"loop", 0, func(d *vt.Driver) {
			d.WriteDesc(d.Desc, 0, 0x9000, 16, vt.FlagNext, 1)
			d.WriteDesc(d.Desc, 1, 0x9000, 16, vt.FlagNext, 0)
			d.PublishHead(0)
		}},
		{"buffer outside RAM", 0, func(d *vt.Driver) {
			d.WriteDesc(d.Desc, 0, memSize-8, 16, 0, 0)
			d.PublishHead(0)
		}},
		{"buffer wraps address space", 0, func(d *vt.Driver) {
			d.WriteDesc(d.Desc, 0, ^uint64(0)-4, 16, 0, 0)
			d.PublishHead(0)
		}},
		{"indirect not negotiated", 0, func(d *vt.Driver) {
			d.WriteDesc(d.Desc, 0, 0x9000, 32, vt.FlagIndirect, 0)
			d.PublishHead(0)
		}},
		{"indirect bad length", 1 << virtio.FIndirectDesc, func(d *vt.Driver) {
			d.WriteDesc(d.Desc, 0, 0x9000, 17, vt.FlagIndirect, 0)
			d.PublishHead(0)
		}},
		{"indirect too long", 1 << virtio.FIndirectDesc, func(d *vt.Driver) {
			d.WriteDesc(d.Desc, 0, 0x9000, 16*9, vt.FlagIndirect, 0)
			d.PublishHead(0)
		}},
		{"indirect table outside RAM", 1 << virtio.FIndirectDesc, func(d *vt.Driver) {
			d.WriteDesc(d.Desc, 0, memSize-16, 32, vt.FlagIndirect, 0)
			d.PublishHead(0)
		}},
		{"nested indirect", 1 << virtio.FIndirectDesc, func(d *vt.Driver) {
			d.WriteDesc(0x9000, 0, 0xa000, 16, vt.FlagIndirect, 0)
			d.WriteDesc(d.Desc, 0, 0x9000, 16, vt.FlagIndirect, 0)
			d.PublishHead(0)
		}},
		{"indirect with next", 1 << virtio.FIndirectDesc, func(d *vt.Driver) {
			d.WriteDesc(0x9000, 0, 0xa000, 16, 0, 0)
			d.WriteDesc(d.Desc, 0, 0x9000, 16, vt.FlagIndirect|vt.FlagNext, 1)
			d.PublishHead(0)
		}},
		{"indirect loop", 1 << virtio.FIndirectDesc, func(d *vt.Driver) {
			d.WriteDesc(0x9000, 0, 0xa000, 16, vt.FlagNext, 1)
			d.WriteDesc(0x9000, 1, 0xa000, 16, vt.FlagNext, 0)
			d.WriteDesc(d.Desc, 0, 0x9000, 32, vt.FlagIndirect, 0)
			d.PublishHead(0)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, q := setup(t, 8, tc.features)
			tc.corrupt(d)
			var ch virtio.Chain
			ok, err := q.Pop(&ch)
			if ok || !errors.Is(err, virtio.ErrBroken) {
				t.Fatalf("Pop = %v, %v; want ErrBroken", ok, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	mem := vt.NewMemory(memSize)
	for _, tc := range []struct {
		name string
		mod  func(q *virtio.Queue)
		ok   bool
	}{
		{"good", func(q *virtio.Queue) {}, true},
		{"not ready", func(q *virtio.Queue) { q.Ready = false }, false},
		{"size 0", func(q *virtio.Queue) { q.Size = 0 }, false},
		{"size not power of 2", func(q *virtio.Queue) { q.Size = 6 }, false},
		{"size above max", func(q *virtio.Queue) { q.Size = 32 }, false},
		{"desc misaligned", func(q *virtio.Queue) { q.DescTable = 0x1008 }, false},
		{"avail misaligned", func(q *virtio.Queue) { q.AvailRing++ }, false},
		{"used misaligned", func(q *virtio.Queue) { q.UsedRing += 2 }, false},
		{"used outside RAM", func(q *virtio.Queue) { q.UsedRing = memSize - 8 }, false},
		{"desc outside RAM", func(q *virtio.Queue) { q.DescTable = 1 << 40 }, false},
	} {
		d := vt.NewDriver(mem, 0x1000, 16, memSize)
		q := virtio.NewQueue(16)
		d.Configure(q)
		tc.mod(q)
		if err := q.Validate(mem); (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v", tc.name, err)
		}
	}
}

// FuzzQueue feeds arbitrary ring and descriptor contents to Pop/Push/Flush:
// it must never panic and never report a buffer outside guest memory.
func FuzzQueue(f *testing.F) {
	f.Add([]byte{}, uint16(1), uint8(3))
	f.Add(binary.LittleEndian.AppendUint64(make([]byte, 12), 0x9000), uint16(3), uint8(1))
	f.Fuzz(func(t *testing.T, ring []byte, availIdx uint16, features uint8) {
		const size = 8
		mem := vt.NewMemory(64 << 10)
		d := vt.NewDriver(mem, 0x1000, size, 64<<10)
		// The fuzz input overwrites descriptors, avail ring and an
		// indirect table area.
		region, _ := mem.Slice(0x1000, 0x3000)
		copy(region, ring)
		d.SetAvailIdx(availIdx)
		q := virtio.NewQueue(size)
		d.Configure(q)
		if err := q.Activate(mem, uint64(features&3)<<virtio.FIndirectDesc); err != nil {
			t.Fatal(err)
		}
		var ch virtio.Chain
		for i := 0; i < 2*size; i++ {
			ok, err := q.Pop(&ch)
			if err != nil {
				if !errors.Is(err, virtio.ErrBroken) {
					t.Fatalf("error not ErrBroken: %v", err)
				}
				return
			}
			if !ok {
				break
			}
			if len(ch.Descs) > size {
				t.Fatalf("chain of %d descriptors in a queue of %d", len(ch.Descs), size)
			}
			for _, dsc := range ch.Descs {
				if !mem.Contains(dsc.Addr, uint64(dsc.Len)) {
					t.Fatalf("descriptor %+v outside memory", dsc)
				}
			}
			if err := q.Push(ch.Head, 0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := q.Flush(); err != nil {
			t.Fatal(err)
		}
		_, _ = q.ArmNotify()
	})
}
