// Package net owns the virtio-net device over a host tap: the receive and
// transmit queues served on an event loop (an iothread or the VMM's
// default loop), the tap in IFF_VNET_HDR mode with the VERSION_1 header
// size, checksum and segmentation offloads negotiated with the driver and
// mirrored on the tap (TUNSETOFFLOAD), mergeable receive buffers, the MAC
// and link status in the configuration space. Receive is driven by epoll
// on the tap; while the driver has no receive buffers the tap is taken
// out of the loop (the frame read last is kept) until the driver kicks
// the receive queue.
//
// With Config.Vhost the host kernel's vhost-net moves the frames instead:
// the VMM negotiates features, sets the tap's offloads, hands the kernel
// the memory table, both rings and the tap (vhost.go), and only relays
// the kernel's used-buffer notifications to the guest's interrupt; the
// configuration space stays here.
//
// Concurrency: Activate and Reset are called by the transport (vCPU
// threads, under the transport's lock) and hand the work to the loop with
// eventloop.Call; queue and tap processing run only on the loop. The
// configuration space (MAC, link status) is guarded by mu. Counters are
// atomic. The tap may be swapped while the device runs (replace.go): it
// changes only on the loop, under mu.
package net

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/vhost"
)

// Feature bits (virtio spec 5.1.3).
const (
	FCsum        = 0
	FGuestCsum   = 1
	FMAC         = 5
	FGuestTSO4   = 7
	FGuestTSO6   = 8
	FGuestECN    = 9
	FGuestUFO    = 10
	FHostTSO4    = 11
	FHostTSO6    = 12
	FHostECN     = 13
	FHostUFO     = 14
	FMrgRxbuf    = 15
	FStatus      = 16
	StatusLinkUp = 1
)

// Queue geometry and limits.
const (
	QueueSize = 256
	RxQueue   = 0
	TxQueue   = 1
	// ConfigSize is mac[6], status, max_virtqueue_pairs.
	ConfigSize = 10
	// MaxFrame bounds one frame with its header in either direction:
	// a 64 KiB GSO packet, the Ethernet header and the vnet header.
	MaxFrame = HeaderSize + 14 + 65535 + 1
	// budget bounds the frames handled per event before the loop serves
	// other devices (epoll is level-triggered, so work left is resumed).
	budget = 256
	// signalBatch is how many completions are published before an
	// interrupt is considered even while more frames are pending.
	signalBatch = 64
)

// Config describes one NIC.
type Config struct {
	ID string
	// TapName attaches to (or creates) the tap of that name; TapFD, if
	// not negative, is used instead: an attached tap descriptor that New
	// duplicates (the caller keeps its copy).
	TapName string
	TapFD   int
	// MAC is the guest's address; the zero value asks New for a random
	// locally administered unicast address.
	MAC [6]byte
	// Vhost has the kernel's vhost-net serve the queues; VhostPath
	// overrides VhostDevice (tests).
	Vhost     bool
	VhostPath string
}

// VhostDevice is the vhost-net character device.
const VhostDevice = "/dev/vhost-net"

// Stats are the device's counters. With vhost the kernel moves the
// frames and they are not counted here (the tap's own counters have them).
type Stats struct {
	RxFrames, RxBytes, RxDropped uint64
	TxFrames, TxBytes, TxDropped uint64
}

// Net is a virtio-net device.
type Net struct {
	cfg      Config
	loop     *eventloop.Loop
	tap      *Tap // nil while a hot-replaceable slot is empty
	features uint64
	vh       *vhost.Device // nil for the userspace backend

	mu             sync.Mutex
	mac            [6]byte
	linkUp         bool
	onConfigChange func() error

	rxFrames, rxBytes, rxDropped atomic.Uint64
	txFrames, txBytes, txDropped atomic.Uint64

	// Owned by the loop while active.
	act       *virtio.Activation
	rxq, txq  *virtio.Queue
	rxKick    int
	txKick    int
	mrg       bool
	tapInLoop bool
	stopped   bool
	// vhostRunning: the kernel serves the queues (vhost backend only).
	vhostRunning  bool
	vhostFeatures uint64 // negotiated, while vhostRunning
	rxBuf         []byte
	rxLen         int // length of the frame waiting in rxBuf; 0 if none
	chain         virtio.Chain
	iov           [][]byte
	rxUsed        []usedElem
	firstDescs    []virtio.Desc
}

type usedElem struct {
	head uint16
	len  uint32
}

// New opens the tap and builds the device; its queues will be served on
// loop.
func New(cfg Config, loop *eventloop.Loop) (*Net, error) {
	var tap *Tap
	var err error
	if cfg.TapFD >= 0 {
		tap, err = TapFromFD(cfg.TapFD)
	} else {
		tap, err = OpenTap(cfg.TapName)
	}
	if err != nil {
		return nil, fmt.Errorf("virtio-net %s: %w", cfg.ID, err)
	}
	if !cfg.Vhost {
		return newNet(cfg, loop, tap)
	}
	vh, err := openVhost(cfg, tap)
	if err != nil {
		tap.Close()
		return nil, err
	}
	n, err := newNet(cfg, loop, tap)
	if err != nil {
		vh.Close()
		return nil, err
	}
	n.vh = vh
	// The ring layouts the kernel does not handle are not offered.
	n.features &^= (1<<virtio.FIndirectDesc | 1<<virtio.FEventIdx | 1<<FMrgRxbuf) &^ vh.Features()
	return n, nil
}

// newNet builds the device over an open tap, which it then owns.
func newNet(cfg Config, loop *eventloop.Loop, tap *Tap) (*Net, error) {
	var err error
	mac := cfg.MAC
	if mac == ([6]byte{}) {
		if mac, err = RandomMAC(); err != nil {
			tap.Close()
			return nil, fmt.Errorf("virtio-net %s: %w", cfg.ID, err)
		}
	}
	n := &Net{cfg: cfg, loop: loop, tap: tap, mac: mac, linkUp: true, rxKick: -1, txKick: -1,
		rxBuf: make([]byte, MaxFrame+4096)}
	n.features = 1<<virtio.FIndirectDesc | 1<<virtio.FEventIdx |
		1<<FCsum | 1<<FGuestCsum | 1<<FGuestTSO4 | 1<<FGuestTSO6 | 1<<FGuestUFO |
		1<<FHostTSO4 | 1<<FHostTSO6 | 1<<FHostUFO | 1<<FMrgRxbuf | 1<<FStatus | 1<<FMAC
	log.L.Debugf("virtio-net %s: tap %s, mac %s, loop %s, vhost %v", cfg.ID, tap.Name(), FormatMAC(mac), loop.Name(), cfg.Vhost)
	return n, nil
}

// RandomMAC returns a random locally administered unicast address.
func RandomMAC() ([6]byte, error) {
	var m [6]byte
	if _, err := rand.Read(m[:]); err != nil {
		return m, fmt.Errorf("random MAC: %w", err)
	}
	m[0] = m[0]&^0x01 | 0x02
	return m, nil
}

// FormatMAC writes m as xx:xx:xx:xx:xx:xx.
func FormatMAC(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// ID is the interface id (a slot's name while it is empty).
func (n *Net) ID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg.ID
}

// TapName is the host interface name ("" while no tap is plugged).
func (n *Net) TapName() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tap == nil {
		return ""
	}
	return n.tap.Name()
}

// MAC is the guest's address.
func (n *Net) MAC() [6]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mac
}

// Stats returns the counters.
func (n *Net) Stats() Stats {
	return Stats{
		RxFrames: n.rxFrames.Load(), RxBytes: n.rxBytes.Load(), RxDropped: n.rxDropped.Load(),
		TxFrames: n.txFrames.Load(), TxBytes: n.txBytes.Load(), TxDropped: n.txDropped.Load(),
	}
}

// SetConfigNotifier sets the function that raises a configuration change
// interrupt (the transport's ConfigChanged); SetLinkUp calls it.
func (n *Net) SetConfigNotifier(f func() error) {
	n.mu.Lock()
	n.onConfigChange = f
	n.mu.Unlock()
}

// SetLinkUp changes the link status the driver sees and notifies it.
func (n *Net) SetLinkUp(up bool) error {
	n.mu.Lock()
	changed := n.linkUp != up
	n.linkUp = up
	f := n.onConfigChange
	n.mu.Unlock()
	if changed && f != nil {
		return f()
	}
	return nil
}

// Close resets the device and closes the tap.
func (n *Net) Close() error {
	n.Reset()
	if n.vh != nil {
		n.vh.Close()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tap == nil {
		return nil
	}
	return n.tap.Close()
}

// DeviceID implements virtio.Device.
func (n *Net) DeviceID() uint32 { return virtio.IDNet }

// Features implements virtio.Device.
func (n *Net) Features() uint64 { return n.features }

// QueueMaxSizes implements virtio.Device.
func (n *Net) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device.
func (n *Net) ReadConfig(offset uint64, data []byte) {
	clear(data)
	var c [ConfigSize]byte
	n.mu.Lock()
	copy(c[:6], n.mac[:])
	if n.linkUp {
		binary.LittleEndian.PutUint16(c[6:], StatusLinkUp)
	}
	n.mu.Unlock()
	binary.LittleEndian.PutUint16(c[8:], 1)
	if offset < ConfigSize {
		copy(data, c[offset:])
	}
}

// WriteConfig implements virtio.Device: with VERSION_1 the MAC is
// read-only (no CTRL_MAC_ADDR), so writes are ignored.
func (n *Net) WriteConfig(offset uint64, data []byte) {}

// offloads maps the negotiated GUEST_* features to tap offload flags.
func offloads(features uint64) int {
	f := 0
	if virtio.HasFeature(features, FGuestCsum) {
		f |= TunFCsum
		if virtio.HasFeature(features, FGuestTSO4) {
			f |= TunFTSO4
		}
		if virtio.HasFeature(features, FGuestTSO6) {
			f |= TunFTSO6
		}
		if virtio.HasFeature(features, FGuestECN) {
			f |= TunFTSOECN
		}
		if virtio.HasFeature(features, FGuestUFO) {
			f |= TunFUFO
		}
	}
	return f
}

// Activate implements virtio.Device.
func (n *Net) Activate(a virtio.Activation) error {
	if len(a.Queues) != 2 || len(a.Kicks) != 2 {
		return fmt.Errorf("virtio-net %s: %d queues, want 2", n.cfg.ID, len(a.Queues))
	}
	if n.vh != nil {
		return n.activateVhost(a)
	}
	var err error
	n.loop.Call(func() {
		if n.tap != nil {
			if err = n.tap.SetOffload(offloads(a.Features)); err != nil {
				return
			}
		}
		n.act, n.rxq, n.txq = &a, a.Queues[RxQueue], a.Queues[TxQueue]
		n.rxKick, n.txKick = a.Kicks[RxQueue], a.Kicks[TxQueue]
		n.mrg = virtio.HasFeature(a.Features, FMrgRxbuf)
		n.stopped, n.rxLen = false, 0
		if err = n.loop.Add(n.rxKick, n.onRxKick); err != nil {
			n.deactivate()
			return
		}
		if err = n.loop.Add(n.txKick, n.onTxKick); err != nil {
			n.deactivate()
			return
		}
		if n.tap == nil {
			return
		}
		if err = n.loop.Add(n.tap.Fd(), n.onTap); err != nil {
			n.deactivate()
			return
		}
		n.tapInLoop = true
	})
	if err != nil {
		return fmt.Errorf("virtio-net %s: %w", n.cfg.ID, err)
	}
	return nil
}

// deactivate drops the loop registrations; it runs on the loop.
func (n *Net) deactivate() {
	if n.rxKick >= 0 {
		_ = n.loop.Remove(n.rxKick)
	}
	if n.txKick >= 0 {
		_ = n.loop.Remove(n.txKick)
	}
	if n.tapInLoop {
		_ = n.loop.Remove(n.tap.Fd())
		n.tapInLoop = false
	}
	n.act, n.rxq, n.txq, n.rxKick, n.txKick = nil, nil, nil, -1, -1
	n.rxLen = 0
}

// Reset implements virtio.Device.
func (n *Net) Reset() {
	if n.vh != nil {
		n.resetVhost()
	}
	n.loop.Call(func() {
		if n.act != nil {
			n.deactivate()
		}
		if n.tap != nil && n.tap.fd >= 0 {
			if err := n.tap.SetOffload(0); err != nil {
				log.L.Debugf("virtio-net %s: %v", n.cfg.ID, err)
			}
		}
	})
}

func (n *Net) fail(err error) {
	n.stopped = true
	// A stopped device no longer reads the tap; left in the
	// level-triggered loop, a readable tap would spin it until reset.
	n.pauseRx()
	if n.act != nil {
		n.act.Broken(err)
	}
}

func (n *Net) signal(q *virtio.Queue) {
	need, err := q.Flush()
	if err != nil {
		n.fail(err)
		return
	}
	if need {
		if err := n.act.Interrupt.Signal(virtio.InterruptVring); err != nil {
			log.L.Errorf("virtio-net %s: %v", n.cfg.ID, err)
		}
	}
}

func (n *Net) onTxKick() {
	_ = rawsys.Drain(n.txKick)
	n.processTx()
}

func (n *Net) onRxKick() {
	_ = rawsys.Drain(n.rxKick)
	if n.act == nil || n.stopped || n.tap == nil {
		return
	}
	if !n.tapInLoop {
		if err := n.loop.Add(n.tap.Fd(), n.onTap); err != nil {
			log.L.Errorf("virtio-net %s: resume receive: %v", n.cfg.ID, err)
			return
		}
		n.tapInLoop = true
	}
	n.processRx()
}

func (n *Net) onTap() { n.processRx() }

// pauseRx takes the tap out of the loop until the driver adds receive
// buffers (its kick resumes it).
func (n *Net) pauseRx() {
	if n.tapInLoop {
		_ = n.loop.Remove(n.tap.Fd())
		n.tapInLoop = false
	}
}

// processRx moves frames from the tap to the receive queue.
func (n *Net) processRx() {
	if n.act == nil || n.stopped || n.tap == nil {
		return
	}
	delivered := 0
	for range budget {
		if n.rxLen == 0 {
			k, err := rawsys.Read(n.tap.Fd(), n.rxBuf)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				log.L.Warnf("virtio-net %s: read tap: %v", n.cfg.ID, err)
				n.pauseRx()
				break
			}
			if k < HeaderSize {
				n.rxDropped.Add(1)
				continue
			}
			n.rxLen = k
		}
		ok, err := n.deliver(n.rxBuf[:n.rxLen])
		if err != nil {
			n.fail(err)
			return
		}
		if !ok {
			n.pauseRx()
			break
		}
		n.rxLen = 0
		if delivered++; delivered%signalBatch == 0 {
			n.signal(n.rxq)
		}
	}
	n.signal(n.rxq)
}

// popRx pops a receive chain, arming the notification when the ring is
// empty; ok false means the driver has no buffers now.
func (n *Net) popRx() (bool, error) {
	for {
		ok, err := n.rxq.Pop(&n.chain)
		if err != nil || ok {
			return ok, err
		}
		more, err := n.rxq.ArmNotify()
		if err != nil || !more {
			return false, err
		}
	}
}

// fill copies src into the device-writable buffers of the current chain
// and returns the bytes copied.
func (n *Net) fill(src []byte) (int, error) {
	done := 0
	for _, d := range n.chain.Descs {
		if !d.Write {
			continue
		}
		if done == len(src) {
			break
		}
		m := min(uint64(d.Len), uint64(len(src)-done))
		dst, err := n.act.Mem.Slice(d.Addr, m)
		if err != nil {
			return done, fmt.Errorf("%w: rx buffer: %v", virtio.ErrBroken, err)
		}
		done += copy(dst, src[done:])
	}
	return done, nil
}

// deliver puts one frame (header included) on the receive queue. It
// returns false, consuming nothing, when the driver has too few buffers.
func (n *Net) deliver(frame []byte) (bool, error) {
	n.rxUsed = n.rxUsed[:0]
	if !n.mrg {
		ok, err := n.popRx()
		if err != nil || !ok {
			return false, err
		}
		binary.LittleEndian.PutUint16(frame[10:], 1)
		k, err := n.fill(frame)
		if err != nil {
			return false, err
		}
		if k < len(frame) {
			// The buffer cannot hold the frame: give the buffer back
			// empty and drop the frame.
			n.rxDropped.Add(1)
			return true, n.rxq.Push(n.chain.Head, 0)
		}
		n.rxFrames.Add(1)
		n.rxBytes.Add(uint64(len(frame) - HeaderSize))
		return true, n.rxq.Push(n.chain.Head, uint32(k))
	}
	off := 0
	for off < len(frame) {
		ok, err := n.popRx()
		if err != nil {
			return false, err
		}
		if !ok {
			for range n.rxUsed {
				n.rxq.Undo()
			}
			return false, nil
		}
		if len(n.rxUsed) == 0 {
			n.firstDescs = append(n.firstDescs[:0], n.chain.Descs...)
		}
		k, err := n.fill(frame[off:])
		if err != nil {
			return false, err
		}
		if len(n.rxUsed) == 0 && k < HeaderSize {
			// The first buffer must hold the whole header.
			n.rxDropped.Add(1)
			return true, n.rxq.Push(n.chain.Head, 0)
		}
		n.rxUsed = append(n.rxUsed, usedElem{n.chain.Head, uint32(k)})
		off += k
		if len(n.rxUsed) > int(n.rxq.Size) {
			return false, fmt.Errorf("%w: rx chains without writable space", virtio.ErrBroken)
		}
	}
	// num_buffers sits at header offset 10, in the first chain's first
	// writable buffer (at least HeaderSize bytes were copied there).
	var nb [2]byte
	binary.LittleEndian.PutUint16(nb[:], uint16(len(n.rxUsed)))
	if err := n.writeFirst(10, nb[:]); err != nil {
		return false, err
	}
	for _, u := range n.rxUsed {
		if err := n.rxq.Push(u.head, u.len); err != nil {
			return false, err
		}
	}
	n.rxFrames.Add(1)
	n.rxBytes.Add(uint64(len(frame) - HeaderSize))
	return true, nil
}

// writeFirst writes b at offset off of the first chain's writable space.
func (n *Net) writeFirst(off uint64, b []byte) error {
	for _, d := range n.firstDescs {
		if !d.Write {
			continue
		}
		for len(b) > 0 && off < uint64(d.Len) {
			if err := n.act.Mem.WriteAt(b[:1], d.Addr+off); err != nil {
				return fmt.Errorf("%w: rx header: %v", virtio.ErrBroken, err)
			}
			b, off = b[1:], off+1
		}
		if len(b) == 0 {
			return nil
		}
		off -= uint64(d.Len)
	}
	return fmt.Errorf("%w: rx header outside the buffer", virtio.ErrBroken)
}

// processTx sends the driver's frames to the tap.
func (n *Net) processTx() {
	if n.act == nil || n.stopped {
		return
	}
	q := n.txq
	for done := 0; ; done++ {
		if done == budget {
			// Let the loop serve others; come back through the kick.
			_ = rawsys.Signal(n.txKick)
			break
		}
		ok, err := q.Pop(&n.chain)
		if err != nil {
			n.fail(err)
			return
		}
		if !ok {
			more, err := q.ArmNotify()
			if err != nil {
				n.fail(err)
				return
			}
			if more {
				continue
			}
			break
		}
		if err := n.transmit(); err != nil {
			n.fail(err)
			return
		}
		if err := q.Push(n.chain.Head, 0); err != nil {
			n.fail(err)
			return
		}
		if done%signalBatch == signalBatch-1 {
			n.signal(q)
		}
	}
	n.signal(q)
}

// transmit writes the current chain's readable buffers to the tap as one
// frame. A malformed frame is dropped; only guest memory faults are
// errors.
func (n *Net) transmit() error {
	n.iov = n.iov[:0]
	total := uint64(0)
	for _, d := range n.chain.Descs {
		if d.Write {
			continue
		}
		if total += uint64(d.Len); total > MaxFrame {
			n.txDropped.Add(1)
			log.L.Debugf("virtio-net %s: tx frame longer than %d", n.cfg.ID, MaxFrame)
			return nil
		}
		b, err := n.act.Mem.Slice(d.Addr, uint64(d.Len))
		if err != nil {
			return fmt.Errorf("%w: tx buffer: %v", virtio.ErrBroken, err)
		}
		if len(b) > 0 {
			n.iov = append(n.iov, b)
		}
	}
	var hb [HeaderSize]byte
	got := 0
	for _, b := range n.iov {
		if got == HeaderSize {
			break
		}
		got += copy(hb[got:], b)
	}
	if got < HeaderSize {
		n.txDropped.Add(1)
		return nil
	}
	if n.tap == nil {
		n.txDropped.Add(1) // no tap plugged: the wire is unplugged
		return nil
	}
	h, _ := ParseHeader(hb[:])
	if err := h.CheckTx(n.act.Features, int(total)-HeaderSize); err != nil {
		n.txDropped.Add(1)
		log.L.Debugf("virtio-net %s: %v", n.cfg.ID, err)
		return nil
	}
	for {
		_, err := rawsys.Writev(n.tap.Fd(), n.iov)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// The tap drops what it cannot queue; EAGAIN, EIO (link
			// down) and the like lose this frame only.
			n.txDropped.Add(1)
			log.L.Debugf("virtio-net %s: write tap: %v", n.cfg.ID, err)
			return nil
		}
		break
	}
	n.txFrames.Add(1)
	n.txBytes.Add(total - HeaderSize)
	return nil
}
