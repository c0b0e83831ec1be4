package net

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

const memSize = 8 << 20

type irqRecorder struct {
	mu     sync.Mutex
	n      int
	broken []error
}

func (r *irqRecorder) Signal(bits uint32) error {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
	return nil
}

type rig struct {
	t      *testing.T
	mem    *guestmem.Memory
	rx, tx *vt.Driver
	dev    *Net
	kicks  [2]int
	peer   int // the "host" end of the fake tap
	irq    *irqRecorder
}

// newRig builds a device over a SOCK_SEQPACKET pair standing in for the
// tap (one record = one frame with its vnet header) and activates it with
// features (0: all the device offers).
func newRig(t *testing.T, features uint64) *rig {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sp[1]) })
	unix.SetsockoptInt(sp[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	unix.SetsockoptInt(sp[1], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	loop, err := eventloop.New("test-net", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	dev, err := newNet(Config{ID: "net0", TapFD: -1, MAC: [6]byte{0x52, 0x54, 0, 1, 2, 3}}, loop, &Tap{fd: sp[0], name: "fake", fake: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	mem := vt.NewMemory(memSize)
	r := &rig{t: t, mem: mem, dev: dev, peer: sp[1], irq: &irqRecorder{}}
	r.rx = vt.NewDriver(mem, 0x1000, QueueSize, memSize/2)
	r.tx = vt.NewDriver(mem, memSize/2, QueueSize, memSize)
	if features == 0 {
		features = dev.Features() | 1<<virtio.FVersion1
	}
	var qs []*virtio.Queue
	for i, d := range []*vt.Driver{r.rx, r.tx} {
		q := virtio.NewQueue(QueueSize)
		d.Configure(q)
		if err := q.Activate(mem, features); err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
		if r.kicks[i], err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		fd := r.kicks[i]
		t.Cleanup(func() { unix.Close(fd) })
	}
	err = dev.Activate(virtio.Activation{Mem: mem, Features: features, Queues: qs, Kicks: r.kicks[:],
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

func (r *rig) kick(q int) { unix.Write(r.kicks[q], []byte{1, 0, 0, 0, 0, 0, 0, 0}) }

// wait polls d's used ring until n elements arrived.
func (r *rig) wait(d *vt.Driver, n int) []vt.Used {
	r.t.Helper()
	var got []vt.Used
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < n {
		got = append(got, d.TakeUsed()...)
		if time.Now().After(deadline) {
			r.t.Fatalf("%d of %d used elements after 5s", len(got), n)
		}
		time.Sleep(time.Millisecond)
	}
	return got
}

func (r *rig) noBroken() {
	r.t.Helper()
	r.irq.mu.Lock()
	defer r.irq.mu.Unlock()
	if len(r.irq.broken) > 0 {
		r.t.Fatalf("device reported broken: %v", r.irq.broken)
	}
}

func frame(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13) ^ seed
	}
	return b
}

func (r *rig) put(b []byte) uint64 {
	a := r.tx.Alloc(uint64(len(b)), 16)
	r.mem.WriteAt(b, a)
	return a
}

// readPeer reads one record from the host end, waiting up to timeout.
func (r *rig) readPeer(timeout time.Duration) []byte {
	buf := make([]byte, MaxFrame+100)
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Read(r.peer, buf)
		if err == nil {
			return buf[:n]
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTransmit(t *testing.T) {
	r := newRig(t, 0)
	var hdr [HeaderSize]byte
	Header{Flags: HdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}.Put(hdr[:])
	payload := frame(3000, 7)
	// Header and payload in separate buffers, the payload split in two.
	r.tx.AddChain(vt.Buf{Addr: r.put(hdr[:]), Len: HeaderSize},
		vt.Buf{Addr: r.put(payload[:1000]), Len: 1000}, vt.Buf{Addr: r.put(payload[1000:]), Len: 2000})
	// A frame asking for TCPv4 segmentation with gso_size 0 is dropped.
	var bad [HeaderSize]byte
	Header{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, CsumStart: 34, CsumOffset: 16}.Put(bad[:])
	r.tx.AddChain(vt.Buf{Addr: r.put(append(bad[:], payload[:100]...)), Len: HeaderSize + 100})
	// A chain shorter than the header is dropped.
	r.tx.AddChain(vt.Buf{Addr: r.put([]byte{1, 2, 3}), Len: 3})
	r.kick(TxQueue)
	used := r.wait(r.tx, 3)
	for _, u := range used {
		if u.Len != 0 {
			t.Errorf("tx used len %d, want 0", u.Len)
		}
	}
	got := r.readPeer(time.Second)
	if want := append(hdr[:], payload...); !bytes.Equal(got, want) {
		t.Fatalf("tap got %d bytes, want the %d-byte frame", len(got), len(want))
	}
	if extra := r.readPeer(50 * time.Millisecond); extra != nil {
		t.Errorf("tap got a second frame of %d bytes; malformed frames must be dropped", len(extra))
	}
	s := r.dev.Stats()
	if s.TxFrames != 1 || s.TxBytes != 3000 || s.TxDropped != 2 {
		t.Errorf("stats %+v: want 1 frame, 3000 bytes, 2 dropped", s)
	}
	r.noBroken()
}

func TestTransmitOffloadNotNegotiated(t *testing.T) {
	// Without HOST_TSO4 a TSO frame is dropped.
	r := newRig(t, 1<<virtio.FVersion1|1<<FCsum|1<<FMrgRxbuf)
	var hdr [HeaderSize]byte
	Header{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}.Put(hdr[:])
	r.tx.AddChain(vt.Buf{Addr: r.put(append(hdr[:], frame(200, 1)...)), Len: HeaderSize + 200})
	r.kick(TxQueue)
	r.wait(r.tx, 1)
	if got := r.readPeer(50 * time.Millisecond); got != nil {
		t.Errorf("tap got %d bytes for a frame with an offload not negotiated", len(got))
	}
	if r.dev.Stats().TxDropped != 1 {
		t.Errorf("stats %+v: want 1 dropped", r.dev.Stats())
	}
}

// postRx posts n receive chains of size bytes each and returns their
// addresses.
func (r *rig) postRx(n int, size uint32) []uint64 {
	var addrs []uint64
	for range n {
		a := r.rx.Alloc(uint64(size), 16)
		r.rx.AddChain(vt.Buf{Addr: a, Len: size, Write: true})
		addrs = append(addrs, a)
	}
	return addrs
}

func (r *rig) sendPeer(b []byte) {
	r.t.Helper()
	if _, err := unix.Write(r.peer, b); err != nil {
		r.t.Fatal(err)
	}
}

func TestReceiveMergeable(t *testing.T) {
	r := newRig(t, 0)
	addrs := r.postRx(4, 1500)
	r.kick(RxQueue)
	var hdr [HeaderSize]byte
	Header{Flags: HdrFDataValid}.Put(hdr[:])
	payload := frame(3000, 3)
	r.sendPeer(append(hdr[:], payload...))
	used := r.wait(r.rx, 3)
	want := []uint32{1500, 1500, 12}
	var got []byte
	for i, u := range used {
		if u.Len != want[i] {
			t.Errorf("used[%d].len = %d, want %d", i, u.Len, want[i])
		}
		b := make([]byte, u.Len)
		r.mem.ReadAt(b, addrs[u.ID/1]) // each chain is one descriptor, head = index
		got = append(got, b...)
	}
	h, _ := ParseHeader(got)
	if h.NumBuffers != 3 || h.Flags != HdrFDataValid {
		t.Errorf("header %+v: want num_buffers 3, DATA_VALID", h)
	}
	if !bytes.Equal(got[HeaderSize:], payload) {
		t.Error("payload differs")
	}
	// A small frame uses one buffer.
	r.sendPeer(append(hdr[:], payload[:60]...))
	used = r.wait(r.rx, 1)
	if used[0].Len != HeaderSize+60 {
		t.Errorf("small frame used len %d, want %d", used[0].Len, HeaderSize+60)
	}
	b := make([]byte, HeaderSize)
	r.mem.ReadAt(b, addrs[3])
	if h, _ := ParseHeader(b); h.NumBuffers != 1 {
		t.Errorf("small frame num_buffers %d, want 1", h.NumBuffers)
	}
	if s := r.dev.Stats(); s.RxFrames != 2 || s.RxBytes != 3060 {
		t.Errorf("stats %+v: want 2 frames, 3060 bytes", s)
	}
	r.noBroken()
}

func TestReceiveBackPressure(t *testing.T) {
	r := newRig(t, 0)
	var hdr [HeaderSize]byte
	frames := [][]byte{append(hdr[:], frame(100, 1)...), append(hdr[:], frame(2500, 2)...), append(hdr[:], frame(50, 3)...)}
	for _, f := range frames {
		r.sendPeer(f)
	}
	time.Sleep(50 * time.Millisecond)
	if u := r.rx.TakeUsed(); len(u) != 0 {
		t.Fatalf("%d used elements without posted buffers", len(u))
	}
	var paused bool
	r.dev.loop.Call(func() { paused = !r.dev.tapInLoop && r.dev.rxLen > 0 })
	if !paused {
		t.Fatal("tap still in the loop (or no frame held) while the driver has no buffers")
	}
	// One buffer of 1500: the first frame fits, the second needs two.
	addrs := r.postRx(1, 1500)
	r.kick(RxQueue)
	used := r.wait(r.rx, 1)
	if used[0].Len != 112 {
		t.Errorf("first frame used len %d, want 112", used[0].Len)
	}
	time.Sleep(20 * time.Millisecond)
	if u := r.rx.TakeUsed(); len(u) != 0 {
		t.Fatalf("second frame delivered into too few buffers: %v", u)
	}
	addrs = append(addrs, r.postRx(3, 1500)...)
	r.kick(RxQueue)
	used = r.wait(r.rx, 3)
	if used[0].Len != 1500 || used[1].Len != 1012 || used[2].Len != 62 {
		t.Errorf("used %v: want lens 1500, 1012, 62", used)
	}
	b := make([]byte, 1500+1012)
	r.mem.ReadAt(b[:1500], addrs[1])
	r.mem.ReadAt(b[1500:], addrs[2])
	if !bytes.Equal(b[HeaderSize:], frames[1][HeaderSize:]) {
		t.Error("second frame payload differs")
	}
	if h, _ := ParseHeader(b); h.NumBuffers != 2 {
		t.Errorf("second frame num_buffers %d, want 2", h.NumBuffers)
	}
	r.noBroken()
}

func TestReceiveWithoutMergeable(t *testing.T) {
	r := newRig(t, 1<<virtio.FVersion1|1<<FGuestCsum)
	addrs := r.postRx(2, 2048)
	r.kick(RxQueue)
	var hdr [HeaderSize]byte
	r.sendPeer(append(hdr[:], frame(1000, 9)...))
	r.sendPeer(append(hdr[:], frame(3000, 9)...)) // too big: dropped
	used := r.wait(r.rx, 2)
	if used[0].Len != 1012 || used[1].Len != 0 {
		t.Errorf("used %v: want lens 1012 and 0", used)
	}
	b := make([]byte, HeaderSize)
	r.mem.ReadAt(b, addrs[0])
	if h, _ := ParseHeader(b); h.NumBuffers != 1 {
		t.Errorf("num_buffers %d, want 1", h.NumBuffers)
	}
	if s := r.dev.Stats(); s.RxFrames != 1 || s.RxDropped != 1 {
		t.Errorf("stats %+v: want 1 frame, 1 dropped", s)
	}
	if r.dev.tap.offload != TunFCsum {
		t.Errorf("tap offload %#x, want TUN_F_CSUM", r.dev.tap.offload)
	}
}

func TestBrokenRing(t *testing.T) {
	r := newRig(t, 0)
	r.rx.AddChain(vt.Buf{Addr: memSize + 4096, Len: 100, Write: true}) // outside RAM
	r.kick(RxQueue)
	r.sendPeer(make([]byte, 100))
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.irq.mu.Lock()
		n := len(r.irq.broken)
		r.irq.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a descriptor outside RAM did not break the device")
		}
		time.Sleep(time.Millisecond)
	}
	// The broken device no longer reads the tap, so it must not poll it:
	// a readable tap in the level-triggered loop would spin the loop.
	r.sendPeer(make([]byte, 100))
	var polled bool
	r.dev.loop.Call(func() { polled = r.dev.tapInLoop })
	if polled {
		t.Error("the broken device still polls the tap")
	}
}

func TestConfigSpace(t *testing.T) {
	r := newRig(t, 0)
	changes := 0
	r.dev.SetConfigNotifier(func() error { changes++; return nil })
	b := make([]byte, ConfigSize)
	for i := range b {
		r.dev.ReadConfig(uint64(i), b[i:i+1])
	}
	want := []byte{0x52, 0x54, 0, 1, 2, 3, StatusLinkUp, 0, 1, 0}
	if !bytes.Equal(b, want) {
		t.Errorf("config % x, want % x", b, want)
	}
	r.dev.SetLinkUp(false)
	r.dev.SetLinkUp(false)
	var s [2]byte
	r.dev.ReadConfig(6, s[:])
	if binary.LittleEndian.Uint16(s[:]) != 0 || changes != 1 {
		t.Errorf("after link down: status %v, %d notifications; want 0 and 1", s, changes)
	}
	var far [4]byte
	r.dev.ReadConfig(100, far[:])
	if far != [4]byte{} {
		t.Errorf("read past the config space: % x", far)
	}
}

func TestOffloads(t *testing.T) {
	for _, c := range []struct {
		features uint64
		want     int
	}{
		{0, 0},
		{1 << FGuestTSO4, 0}, // no TSO without checksum offload
		{1 << FGuestCsum, TunFCsum},
		{1<<FGuestCsum | 1<<FGuestTSO4 | 1<<FGuestTSO6 | 1<<FGuestUFO, TunFCsum | TunFTSO4 | TunFTSO6 | TunFUFO},
		{1<<FGuestCsum | 1<<FGuestECN, TunFCsum | TunFTSOECN},
	} {
		if got := offloads(c.features); got != c.want {
			t.Errorf("offloads(%#x) = %#x, want %#x", c.features, got, c.want)
		}
	}
}

func TestRandomMAC(t *testing.T) {
	a, err := RandomMAC()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RandomMAC()
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("%s is not a locally administered unicast address", FormatMAC(a))
	}
	if a == b {
		t.Errorf("two random MACs are equal: %s", FormatMAC(a))
	}
}
