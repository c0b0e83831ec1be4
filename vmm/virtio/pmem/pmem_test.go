package pmem

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

const memSize = 1 << 20

type rig struct {
	t *testing.T
	*vt.Single
	dev *Pmem
	mem *guestmem.Memory
	drv *vt.Driver

	mu     sync.Mutex
	broken error
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	loop, err := eventloop.New("test-pmem", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	dev, err := New(cfg, loop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	r := &rig{t: t, dev: dev}
	r.Single = vt.ActivateSingle(t, dev, memSize, QueueSize, func(err error) { r.mu.Lock(); r.broken = err; r.mu.Unlock() })
	r.mem, r.drv = r.Single.Mem, r.Single.Drv
	return r
}

// request queues a request of type typ and returns the response's address.
func (r *rig) request(typ uint32) uint64 {
	req, resp := r.drv.Alloc(4, 4), r.drv.Alloc(4, 4)
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], typ)
	r.mem.WriteAt(b[:], req)
	r.mem.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, resp)
	r.drv.AddChain(vt.Buf{Addr: req, Len: 4}, vt.Buf{Addr: resp, Len: 4, Write: true})
	return resp
}

func (r *rig) wait(n int) []vt.Used {
	r.t.Helper()
	return r.Wait(r.t, n, 5*time.Second)
}

func (r *rig) response(addr uint64) uint32 {
	var b [4]byte
	r.mem.ReadAt(b[:], addr)
	return binary.LittleEndian.Uint32(b[:])
}

func TestMappingAndConfig(t *testing.T) {
	data := bytes.Repeat([]byte("erofs!"), 1000) // 6000 bytes: a partial last page
	for _, ro := range []bool{true, false} {
		r := newRig(t, Config{ID: "p0", Path: writeFile(t, data), ReadOnly: ro})
		m := r.dev.Mapping()
		if len(m) != Align {
			t.Fatalf("read-only %v: region %d bytes, want %d", ro, len(m), Align)
		}
		if !bytes.Equal(m[:len(data)], data) {
			t.Errorf("read-only %v: the region does not start with the file", ro)
		}
		if bytes.ContainsFunc(m[len(data):], func(c rune) bool { return c != 0 }) {
			t.Errorf("read-only %v: the padding after the file is not zero", ro)
		}
		r.dev.SetAddress(5 << 30)
		var cfg [ConfigSize + 8]byte
		for off := 0; off < len(cfg); off += 4 {
			r.dev.ReadConfig(uint64(off), cfg[off:off+4])
		}
		if s, n := binary.LittleEndian.Uint64(cfg[0:]), binary.LittleEndian.Uint64(cfg[8:]); s != 5<<30 || n != Align {
			t.Errorf("config start %#x size %#x, want %#x %#x", s, n, uint64(5<<30), Align)
		}
		if !bytes.Equal(cfg[ConfigSize:], make([]byte, 8)) {
			t.Error("bytes past the configuration read non-zero")
		}
		r.dev.WriteConfig(0, []byte{1, 2, 3, 4})
		r.dev.ReadConfig(0, cfg[:8])
		if binary.LittleEndian.Uint64(cfg[:8]) != 5<<30 {
			t.Error("a configuration write changed the start")
		}
	}
}

func TestWrites(t *testing.T) {
	data := make([]byte, 3*Align+1) // a region of 4 * Align
	shared := writeFile(t, data)
	r := newRig(t, Config{ID: "rw", Path: shared})
	if n := len(r.dev.Mapping()); n != 4*Align {
		t.Fatalf("region %d bytes, want %d", n, 4*Align)
	}
	copy(r.dev.Mapping()[Align:], "written by the guest")
	resp := r.request(ReqTypeFlush)
	if u := r.wait(1); u[0].Len != 4 || r.response(resp) != RespOK {
		t.Fatalf("flush: used %v, response %d", u, r.response(resp))
	}
	got, _ := os.ReadFile(shared)
	if !bytes.HasPrefix(got[Align:], []byte("written by the guest")) {
		t.Error("a write through the shared region is not in the file after a flush")
	}

	private := writeFile(t, data)
	p := newRig(t, Config{ID: "ro", Path: private, ReadOnly: true})
	copy(p.dev.Mapping(), "private")
	resp = p.request(ReqTypeFlush)
	if u := p.wait(1); u[0].Len != 4 || p.response(resp) != RespOK {
		t.Fatalf("read-only flush: used %v, response %d", u, p.response(resp))
	}
	if got, _ := os.ReadFile(private); !bytes.Equal(got, data) {
		t.Error("a write to a read-only device reached its file")
	}
	if p.dev.Flushes() != 1 || r.dev.Flushes() != 1 {
		t.Errorf("flushes %d and %d, want 1 each", p.dev.Flushes(), r.dev.Flushes())
	}
}

func TestBadRequests(t *testing.T) {
	r := newRig(t, Config{ID: "p", Path: writeFile(t, []byte{1}), ReadOnly: true})
	resp := r.request(7)
	if u := r.wait(1); u[0].Len != 4 || r.response(resp) != RespEIO {
		t.Errorf("unknown type: used %v, response %d, want %d", u, r.response(resp), RespEIO)
	}
	// A request without a response buffer breaks the queue.
	r.drv.AddChain(vt.Buf{Addr: r.drv.Alloc(4, 4), Len: 4})
	r.Notify()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		err := r.broken
		r.mu.Unlock()
		if err != nil {
			if !strings.Contains(err.Error(), "response") {
				t.Errorf("broken with %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a request without a response buffer did not break the device")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	for name, cfg := range map[string]Config{
		"missing":   {ID: "a", Path: filepath.Join(dir, "none")},
		"directory": {ID: "b", Path: dir, ReadOnly: true},
		"empty":     {ID: "c", Path: empty},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// FuzzRequest parses arbitrary chains over arbitrary guest memory.
func FuzzRequest(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0}, []byte{0, 4, 1, 5})
	f.Fuzz(func(t *testing.T, memBytes []byte, layout []byte) {
		mem := vt.NewMemory(4096)
		s, _ := mem.Slice(0, 4096)
		copy(s, memBytes)
		var c virtio.Chain
		for i := 0; i+1 < len(layout) && len(c.Descs) < 16; i += 2 {
			// Addresses up to 4096+: some buffers fall outside memory.
			c.Descs = append(c.Descs, virtio.Desc{Addr: uint64(layout[i]) * 17, Len: uint32(layout[i+1]) / 2, Write: layout[i+1]&1 == 1})
		}
		typ, resp, err := ParseRequest(mem, &c)
		if err != nil {
			return
		}
		if len(resp) != 4 {
			t.Fatalf("response buffer of %d bytes", len(resp))
		}
		_ = typ
	})
}
