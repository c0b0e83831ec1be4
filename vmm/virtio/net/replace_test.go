package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// newSlotRig activates an empty NIC slot with the fake driver; notified
// counts configuration interrupts.
func newSlotRig(t *testing.T, notified *atomic.Int32) *rig {
	t.Helper()
	loop, err := eventloop.New("test-slot", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	dev, err := NewEmpty("netslot0", [6]byte{0x52, 0x54, 0, 9, 9, 9}, loop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	dev.SetConfigNotifier(func() error { notified.Add(1); return nil })
	mem := vt.NewMemory(memSize)
	r := &rig{t: t, mem: mem, dev: dev, peer: -1, irq: &irqRecorder{}}
	r.rx = vt.NewDriver(mem, 0x1000, QueueSize, memSize/2)
	r.tx = vt.NewDriver(mem, memSize/2, QueueSize, memSize)
	features := dev.Features() | 1<<virtio.FVersion1
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
		Interrupt: r.irq, Broken: func(err error) { t.Errorf("device broken: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fakeTap returns a socket-pair stand-in for a tap and its host end.
func fakeTap(t *testing.T) (*Tap, int) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sp[1]) })
	return &Tap{fd: sp[0], name: "fake", fake: true}, sp[1]
}

func linkStatus(n *Net) uint16 {
	var c [ConfigSize]byte
	n.ReadConfig(0, c[:])
	return binary.LittleEndian.Uint16(c[6:])
}

func TestNICSlotPlugUnplug(t *testing.T) {
	var notified atomic.Int32
	r := newSlotRig(t, &notified)
	if r.dev.Plugged() || linkStatus(r.dev) != 0 || r.dev.TapName() != "" {
		t.Fatalf("empty slot: plugged %v, status %d, tap %q", r.dev.Plugged(), linkStatus(r.dev), r.dev.TapName())
	}
	if !virtio.HasFeature(r.dev.Features(), FStatus) || r.dev.MAC() != [6]byte{0x52, 0x54, 0, 9, 9, 9} {
		t.Fatalf("slot features %#x mac %x", r.dev.Features(), r.dev.MAC())
	}
	var hdr [HeaderSize]byte
	payload := frame(200, 4)
	send := func() {
		r.tx.AddChain(vt.Buf{Addr: r.put(append(hdr[:], payload...)), Len: HeaderSize + 200})
		r.kick(TxQueue)
		r.wait(r.tx, 1)
	}
	// Transmit while empty: the frame is dropped, the chain returned.
	send()
	if s := r.dev.Stats(); s.TxDropped != 1 || s.TxFrames != 0 {
		t.Errorf("empty slot stats %+v: want 1 dropped", s)
	}
	if err := r.dev.Unplug("netslot0"); !errors.Is(err, ErrNoTap) {
		t.Errorf("unplug of an empty slot: %v", err)
	}

	for round := range 2 {
		tap, peer := fakeTap(t)
		r.peer = peer
		before := notified.Load()
		if err := r.dev.plugTap("eth-hot", tap); err != nil {
			t.Fatal(err)
		}
		if notified.Load() != before+1 || linkStatus(r.dev) != StatusLinkUp || r.dev.ID() != "eth-hot" || r.dev.TapName() != "fake" {
			t.Fatalf("round %d after plug: %d interrupts, status %d, id %q", round, notified.Load()-before, linkStatus(r.dev), r.dev.ID())
		}
		if err := r.dev.plugTap("again", &Tap{fd: -1, fake: true}); !errors.Is(err, ErrTapPlugged) {
			t.Errorf("second plug: %v", err)
		}
		send()
		if got := r.readPeer(time.Second); !bytes.Equal(got, append(hdr[:], payload...)) {
			t.Fatalf("round %d: tap got %d bytes", round, len(got))
		}
		addrs := r.postRx(1, 4096)
		r.kick(RxQueue)
		r.sendPeer(append(hdr[:], payload...))
		u := r.wait(r.rx, 1)[0]
		got := make([]byte, u.Len)
		r.mem.ReadAt(got, addrs[0])
		if u.Len != HeaderSize+200 || !bytes.Equal(got[HeaderSize:], payload) {
			t.Fatalf("round %d: received %d bytes", round, u.Len)
		}

		before = notified.Load()
		if err := r.dev.Unplug("netslot0"); err != nil {
			t.Fatal(err)
		}
		if notified.Load() != before+1 || linkStatus(r.dev) != 0 || r.dev.Plugged() || r.dev.ID() != "netslot0" {
			t.Fatalf("round %d after unplug: %d interrupts, status %d", round, notified.Load()-before, linkStatus(r.dev))
		}
		// The tap is closed: the host end sees end of file.
		var b [16]byte
		if n, err := unix.Read(peer, b[:]); n != 0 || err != nil {
			t.Errorf("round %d: host end read %d, %v after unplug; want EOF", round, n, err)
		}
		dropped := r.dev.Stats().TxDropped
		send()
		if r.dev.Stats().TxDropped != dropped+1 {
			t.Errorf("round %d: transmit after unplug not dropped", round)
		}
	}
}

// A tap plugged before the driver activates the device is polled from
// activation on.
func TestNICPlugBeforeActivate(t *testing.T) {
	loop, err := eventloop.New("test-slot", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	dev, err := NewEmpty("s", [6]byte{}, loop)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if dev.MAC() == ([6]byte{}) || dev.MAC()[0]&3 != 2 {
		t.Errorf("random slot MAC %x is not locally administered unicast", dev.MAC())
	}
	tap, _ := fakeTap(t)
	if err := dev.plugTap("n", tap); err != nil {
		t.Fatal(err)
	}
	if linkStatus(dev) != StatusLinkUp {
		t.Error("link down after plug without a notifier")
	}
}

func TestNICPlugErrors(t *testing.T) {
	var notified atomic.Int32
	r := newSlotRig(t, &notified)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no name", Config{ID: "a", TapFD: -1}},
		{"name too long", Config{ID: "a", TapName: "0123456789abcdefg", TapFD: -1}},
		{"fd is not a tap", Config{ID: "a", TapFD: p[0]}},
	} {
		if err := r.dev.Plug(tc.cfg); err == nil {
			t.Errorf("%s: plugged", tc.name)
		}
	}
	if r.dev.Plugged() || notified.Load() != 0 || linkStatus(r.dev) != 0 {
		t.Error("failed plugs changed the slot")
	}
}
