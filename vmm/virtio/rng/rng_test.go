package rng

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

const memSize = 4 << 20

type rig struct {
	t *testing.T
	*vt.Single
	mem *guestmem.Memory
	drv *vt.Driver
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	loop, err := eventloop.New("test-rng", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	dev, err := New(cfg, loop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	s := vt.ActivateSingle(t, dev, memSize, QueueSize, func(err error) { t.Errorf("broken: %v", err) })
	return &rig{t: t, Single: s, mem: s.Mem, drv: s.Drv}
}

func (r *rig) wait(n int, within time.Duration) []vt.Used {
	r.t.Helper()
	return r.Wait(r.t, n, within)
}

func TestGetrandom(t *testing.T) {
	r := newRig(t, Config{})
	a := r.drv.Alloc(100, 8)
	b1, b2 := r.drv.Alloc(16, 8), r.drv.Alloc(48, 8)
	big := r.drv.Alloc(128<<10, 8)
	ro := r.drv.Alloc(32, 8)
	r.drv.AddChain(vt.Buf{Addr: a, Len: 100, Write: true})
	r.drv.AddChain(vt.Buf{Addr: b1, Len: 16, Write: true}, vt.Buf{Addr: b2, Len: 48, Write: true})
	r.drv.AddIndirect(vt.Buf{Addr: big, Len: 128 << 10, Write: true})
	r.drv.AddChain(vt.Buf{Addr: ro, Len: 32}) // device-readable only: nothing to fill
	used := r.wait(4, 5*time.Second)
	for i, want := range []uint32{100, 64, MaxRequest, 0} {
		if used[i].Len != want {
			t.Errorf("request %d: %d bytes, want %d", i, used[i].Len, want)
		}
	}
	buf := make([]byte, MaxRequest)
	r.mem.ReadAt(buf, big)
	if bytes.Count(buf, []byte{0}) > MaxRequest/64 {
		t.Error("the 64 KiB request looks unfilled")
	}
	tail := make([]byte, 4096)
	r.mem.ReadAt(tail, big+MaxRequest)
	if !bytes.Equal(tail, make([]byte, 4096)) {
		t.Error("bytes past MaxRequest were written")
	}
}

func TestFileSource(t *testing.T) {
	p := filepath.Join(t.TempDir(), "entropy")
	data := bytes.Repeat([]byte("0123456789"), 10)
	os.WriteFile(p, data, 0o644)
	r := newRig(t, Config{File: p})
	a := r.drv.Alloc(40, 8)
	r.drv.AddChain(vt.Buf{Addr: a, Len: 40, Write: true})
	if u := r.wait(1, 5*time.Second); u[0].Len != 40 {
		t.Fatalf("used %v", u)
	}
	got := make([]byte, 40)
	r.mem.ReadAt(got, a)
	if !bytes.Equal(got, data[:40]) {
		t.Errorf("got %q", got)
	}
}

func TestRateLimit(t *testing.T) {
	r := newRig(t, Config{BytesPerSec: 1000})
	for range 3 {
		r.drv.AddChain(vt.Buf{Addr: r.drv.Alloc(800, 8), Len: 800, Write: true})
	}
	start := time.Now()
	used := r.wait(2, 5*time.Second)
	if used[0].Len != 800 || used[1].Len != 200 {
		t.Errorf("used %v: want 800 then the 200 left in the bucket", used)
	}
	used = r.wait(1, 5*time.Second)
	if el := time.Since(start); el < 40*time.Millisecond || used[0].Len == 0 {
		t.Errorf("third request after %v with %d bytes: want a throttled, non-empty answer", el, used[0].Len)
	}
	if _, err := New(Config{BytesPerSec: 10}, nil); err == nil {
		t.Error("New accepted 10 bytes/s")
	}
}
