package vsock

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/lograte"
	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Limits of the unix backend.
const (
	// MaxConns bounds live connections (as Firecracker).
	MaxConns = 1023
	// ConnBufSize is the buf_alloc we advertise: how many bytes of guest
	// data we buffer per connection when the host side is slow.
	ConnBufSize = 256 << 10
	// creditThreshold: once the guest's view of our free space drops
	// below this, a CREDIT_UPDATE goes out as soon as the host consumed
	// something.
	creditThreshold = ConnBufSize / 4
	// connectTimeout bounds the CONNECT handshake and a REQUEST to the
	// guest waiting for its RESPONSE.
	connectTimeout = 2 * time.Second
	// maxOrphanRsts bounds RSTs queued for packets of unknown
	// connections; beyond it they are dropped.
	maxOrphanRsts = 256
	// acceptPause is how long the listener is left alone after accept
	// failed for want of descriptors or memory: it stays readable, and
	// retrying at once would only spin.
	acceptPause = 100 * time.Millisecond
	// Host-initiated connections get local ports in [1<<30, 1<<31).
	firstHostPort = 1 << 30
	lastHostPort  = 1<<31 - 1
)

// Unix is the userspace vsock device.
type Unix struct {
	cfg  Config
	loop *eventloop.Loop

	listener int // listening unix socket
	epfd     int // nested epoll, registered with loop
	timer    int // timerfd for handshake deadlines

	mu     sync.Mutex // guards closed
	closed bool

	// Owned by the loop thread.
	act        *virtio.Activation
	rxq, txq   *virtio.Queue
	kicks      []int
	stopped    bool
	conns      map[connKey]*conn
	handshakes int           // accepted sockets still in their handshake
	fds        map[int32]any // *conn or *handshake, by socket
	rxList     []*conn       // connections with something for the guest
	orphanRsts []Header
	nextPort   uint32
	lastGen    int32
	chain      virtio.Chain
	segs       [][]byte
	data       [][]byte
	extras     []rxExtra // rx buffers filled by the read into chain, after it
	hdrSegs    [][]byte
	hdr        [HeaderSize]byte
	events     []unix.EpollEvent
	batches    uint64 // epoll batches served: a socket left ready shows as a count that keeps growing
	hostReads  uint64 // reads of connections' host sockets (each may fill several rx buffers)
	// acceptResume is when a listener paused by a failed accept is
	// watched again (zero: it is watched).
	acceptResume time.Time
	// Warnings the guest can provoke, one a second; failed accepts, one a
	// minute.
	guestWarns, acceptWarns lograte.Limiter
}

// handshake is an accepted host connection that has not sent its
// CONNECT line yet.
type handshake struct {
	fd       int
	gen      int32 // epoll token, see Unix.newGen
	deadline time.Time
}

// newGen returns the token that tags a socket's epoll registrations. A
// batch from epoll_wait can still hold an event for a socket closed
// earlier in the same batch whose descriptor number a new socket already
// reuses; the token tells the two apart, so that (say) a stale hang-up
// never ends the new connection.
func (d *Unix) newGen() int32 {
	if d.lastGen++; d.lastGen <= 0 {
		d.lastGen = 1
	}
	return d.lastGen
}

// NewUnix creates the listening socket at cfg.UDSPath (which must not
// exist) and the device.
func NewUnix(cfg Config, loop *eventloop.Loop) (_ *Unix, err error) {
	if cfg.UDSPath == "" {
		return nil, fmt.Errorf("vsock %s: the unix backend needs uds-path", cfg.ID)
	}
	if len(cfg.UDSPath) > len(unix.RawSockaddrUnix{}.Path)-12 {
		return nil, fmt.Errorf("vsock %s: uds-path %q is too long for a unix socket (with the _<port> suffix)", cfg.ID, cfg.UDSPath)
	}
	if _, err := os.Lstat(cfg.UDSPath); err == nil {
		return nil, fmt.Errorf("vsock %s: uds-path %q already exists (remove it first)", cfg.ID, cfg.UDSPath)
	}
	d := &Unix{cfg: cfg, loop: loop, listener: -1, epfd: -1, timer: -1,
		conns: map[connKey]*conn{}, fds: map[int32]any{}, nextPort: firstHostPort,
		guestWarns: lograte.Limiter{Every: time.Second}, acceptWarns: lograte.Limiter{Every: time.Minute},
		events: make([]unix.EpollEvent, 64)}
	defer func() {
		if err != nil {
			d.closeFds()
		}
	}()
	if d.listener, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("vsock %s: socket: %w", cfg.ID, err)
	}
	if err = unix.Bind(d.listener, &unix.SockaddrUnix{Name: cfg.UDSPath}); err != nil {
		return nil, fmt.Errorf("vsock %s: bind %q: %w", cfg.ID, cfg.UDSPath, err)
	}
	// Owner only, before anyone can connect: the socket reaches every
	// guest port.
	if err = os.Chmod(cfg.UDSPath, 0o600); err != nil {
		os.Remove(cfg.UDSPath)
		return nil, fmt.Errorf("vsock %s: chmod %q: %w", cfg.ID, cfg.UDSPath, err)
	}
	if err = unix.Listen(d.listener, 128); err != nil {
		os.Remove(cfg.UDSPath)
		return nil, fmt.Errorf("vsock %s: listen %q: %w", cfg.ID, cfg.UDSPath, err)
	}
	if d.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		os.Remove(cfg.UDSPath)
		return nil, fmt.Errorf("vsock %s: epoll: %w", cfg.ID, err)
	}
	if d.timer, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK); err != nil {
		os.Remove(cfg.UDSPath)
		return nil, fmt.Errorf("vsock %s: timerfd: %w", cfg.ID, err)
	}
	for _, fd := range []int{d.listener, d.timer} {
		if err = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			os.Remove(cfg.UDSPath)
			return nil, fmt.Errorf("vsock %s: epoll add: %w", cfg.ID, err)
		}
	}
	if err = loop.Add(d.epfd, d.onEvents); err != nil {
		os.Remove(cfg.UDSPath)
		return nil, fmt.Errorf("vsock %s: %w", cfg.ID, err)
	}
	log.L.Debugf("vsock %s: unix backend, guest cid %d, socket %s, loop %s", cfg.ID, cfg.GuestCID, cfg.UDSPath, loop.Name())
	return d, nil
}

func (d *Unix) closeFds() {
	for _, fd := range []*int{&d.listener, &d.epfd, &d.timer} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// Info implements Device.
func (d *Unix) Info() Info {
	return Info{ID: d.cfg.ID, Backend: BackendUnix, GuestCID: d.cfg.GuestCID, UDSPath: d.cfg.UDSPath}
}

// Close resets the device, closes every connection and the listening
// socket and removes the socket file.
func (d *Unix) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.loop.Call(func() {
		d.resetLocked()
		_ = d.loop.Remove(d.epfd)
	})
	d.closeFds()
	if err := os.Remove(d.cfg.UDSPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vsock %s: %w", d.cfg.ID, err)
	}
	return nil
}

// DeviceID implements virtio.Device.
func (d *Unix) DeviceID() uint32 { return virtio.IDVsock }

// Features implements virtio.Device: stream only (implied), event index
// and indirect descriptors.
func (d *Unix) Features() uint64 { return 1<<virtio.FEventIdx | 1<<virtio.FIndirectDesc }

// QueueMaxSizes implements virtio.Device.
func (d *Unix) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize, EventQSize} }

// ReadConfig implements virtio.Device.
func (d *Unix) ReadConfig(offset uint64, data []byte) { readConfig(d.cfg.GuestCID, offset, data) }

// WriteConfig implements virtio.Device: the configuration is read-only.
func (d *Unix) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (d *Unix) Activate(a virtio.Activation) error {
	if len(a.Queues) != queueCount || len(a.Kicks) != queueCount {
		return fmt.Errorf("vsock %s: %d queues, want %d", d.cfg.ID, len(a.Queues), queueCount)
	}
	var err error
	d.loop.Call(func() {
		d.act, d.rxq, d.txq, d.kicks, d.stopped = &a, a.Queues[rxQueue], a.Queues[txQueue], a.Kicks, false
		handlers := []func(){d.onRxKick, d.onTxKick, d.onEventKick}
		for i, fd := range a.Kicks {
			if err = d.loop.Add(fd, handlers[i]); err != nil {
				for _, done := range a.Kicks[:i] {
					_ = d.loop.Remove(done)
				}
				d.act, d.rxq, d.txq, d.kicks = nil, nil, nil, nil
				return
			}
		}
	})
	if err != nil {
		return fmt.Errorf("vsock %s: %w", d.cfg.ID, err)
	}
	return nil
}

// Reset implements virtio.Device: every connection is closed.
func (d *Unix) Reset() {
	d.loop.Call(d.resetLocked)
}

// resetLocked runs on the loop thread.
func (d *Unix) resetLocked() {
	for _, fd := range d.kicks {
		_ = d.loop.Remove(fd)
	}
	d.act, d.rxq, d.txq, d.kicks = nil, nil, nil, nil
	for fd, o := range d.fds {
		_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		unix.Close(int(fd))
		if c, ok := o.(*conn); ok {
			c.fd = -1
		}
	}
	d.fds = map[int32]any{}
	d.conns = map[connKey]*conn{}
	d.handshakes = 0
	d.rxList, d.orphanRsts = nil, nil
	_ = unix.TimerfdSettime(d.timer, 0, &unix.ItimerSpec{}, nil)
	d.resumeAccept() // the timer that would have is disarmed
}

func (d *Unix) onRxKick() {
	_ = rawsys.Drain(d.kicks[rxQueue])
	d.processRx()
}

func (d *Unix) onTxKick() {
	_ = rawsys.Drain(d.kicks[txQueue])
	d.processTx()
	d.processRx()
}

// onEventKick: the driver posted event buffers; the device keeps them
// (it sends no events: there is no migration or snapshot restore).
func (d *Unix) onEventKick() { _ = rawsys.Drain(d.kicks[eventQueue]) }

// guestWarn logs a protocol error of the guest's, rate limited: a guest
// must not be able to flood the host's log.
func (d *Unix) guestWarn(format string, args ...any) {
	d.guestWarns.Warn(fmt.Sprintf("vsock %s: "+format, append([]any{d.cfg.ID}, args...)...))
}

func (d *Unix) fail(err error) {
	if d.stopped || d.act == nil {
		return
	}
	d.stopped = true
	d.act.Broken(err)
}

// onEvents serves the nested epoll: the listener, handshakes, connection
// sockets and the timer. It handles one batch; the loop calls it again
// while more is ready (level triggered).
func (d *Unix) onEvents() {
	d.batches++
	n, err := rawsys.EpollWaitNow(d.epfd, d.events)
	if err != nil {
		if !errors.Is(err, unix.EINTR) {
			log.L.Errorf("vsock %s: epoll_wait: %v", d.cfg.ID, err)
		}
		return
	}
	for _, ev := range d.events[:n] {
		d.dispatch(ev)
	}
	d.processRx()
}

// dispatch handles one event of a batch. An event whose token is not
// the current owner's is for a socket closed earlier in the batch.
func (d *Unix) dispatch(ev unix.EpollEvent) {
	switch fd := int(ev.Fd); {
	case fd == d.listener:
		d.accept()
	case fd == d.timer:
		_ = rawsys.Drain(d.timer)
		d.expire(time.Now())
	default:
		switch o := d.fds[ev.Fd].(type) {
		case *handshake:
			if o.gen == ev.Pad {
				d.readHandshake(o, ev.Events)
			}
		case *conn:
			if o.gen == ev.Pad {
				d.onConnEvent(o, ev.Events)
			}
		}
	}
}

// accept takes pending host connections. While the guest driver is not
// active they are closed at once, so a dialer retries.
func (d *Unix) accept() {
	for range 64 {
		fd, _, err := unix.Accept4(d.listener, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
			return // the loop calls again while the listener is ready
		}
		if err != nil {
			// Out of descriptors or memory: retry now and then.
			d.acceptWarns.Warn(fmt.Sprintf("vsock %s: accept: %v; host connections wait in the backlog", d.cfg.ID, err))
			d.pauseAccept()
			return
		}
		if d.act == nil || d.stopped || d.full() {
			unix.Close(fd)
			continue
		}
		h := &handshake{fd: fd, gen: d.newGen(), deadline: time.Now().Add(connectTimeout)}
		// Edge triggered: a partial CONNECT line stays unread (it is only
		// peeked at) and would keep a level-triggered socket ready.
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd), Pad: h.gen}
		if err := unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			unix.Close(fd)
			continue
		}
		d.fds[int32(fd)] = h
		d.handshakes++
		d.armTimer()
	}
}

// pauseAccept stops watching the listener until acceptPause has passed
// (expire watches it again); pending clients wait in its backlog.
func (d *Unix) pauseAccept() {
	if err := unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, d.listener, nil); err != nil {
		log.L.Errorf("vsock %s: pause the listener: %v", d.cfg.ID, err)
		return
	}
	d.acceptResume = time.Now().Add(acceptPause)
	d.armTimer()
}

// resumeAccept watches a paused listener again.
func (d *Unix) resumeAccept() {
	if d.acceptResume.IsZero() {
		return
	}
	d.acceptResume = time.Time{}
	if err := unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, d.listener, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(d.listener)}); err != nil {
		log.L.Errorf("vsock %s: watch the listener again: %v", d.cfg.ID, err)
	}
}

// full says whether the connection limit is reached. It counts every
// connection the guest may still hear of (one reset and waiting to send
// its RST too) and every handshake, so that a guest that posts no rx
// buffers cannot make them pile up.
func (d *Unix) full() bool { return len(d.conns)+d.handshakes >= MaxConns }

// readHandshake reads "CONNECT <port>\n" without consuming anything after
// the newline (the client may send data right behind it).
func (d *Unix) readHandshake(h *handshake, events uint32) {
	var b [MaxConnectLine + 1]byte
	n, _, err := unix.Recvfrom(h.fd, b[:], unix.MSG_PEEK)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return
	}
	if err != nil || n == 0 {
		d.dropHandshake(h)
		return
	}
	nl := -1
	for i, c := range b[:n] {
		if c == '\n' {
			nl = i
			break
		}
	}
	if nl < 0 {
		switch {
		case n == len(b):
			log.L.Debugf("vsock %s: handshake line too long", d.cfg.ID)
			d.dropHandshake(h)
		case events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0:
			d.dropHandshake(h) // the rest of the line will not come
		}
		return // wait for the rest of the line
	}
	port, err := ParseConnect(b[:nl])
	if err != nil {
		log.L.Debugf("vsock %s: %v", d.cfg.ID, err)
		d.dropHandshake(h)
		return
	}
	if _, err := unix.Read(h.fd, b[:nl+1]); err != nil {
		d.dropHandshake(h)
		return
	}
	hostPort, ok := d.allocPort(port)
	if !ok {
		d.dropHandshake(h)
		return
	}
	_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, h.fd, nil)
	d.handshakes--
	c := &conn{key: connKey{hostPort: hostPort, guestPort: port}, fd: h.fd, gen: d.newGen(), state: stateConnecting,
		hostInitiated: true, deadline: time.Now().Add(connectTimeout), needRequest: true}
	d.fds[int32(h.fd)] = c
	d.conns[c.key] = c
	d.schedule(c)
	d.armTimer()
}

func (d *Unix) dropHandshake(h *handshake) {
	_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, h.fd, nil)
	delete(d.fds, int32(h.fd))
	unix.Close(h.fd)
	d.handshakes--
}

// allocPort picks the next free host-side port for a connection to
// guestPort, round robin in [1<<30, 1<<31).
func (d *Unix) allocPort(guestPort uint32) (uint32, bool) {
	for range MaxConns + 1 {
		p := d.nextPort
		if d.nextPort++; d.nextPort > lastHostPort {
			d.nextPort = firstHostPort
		}
		if _, used := d.conns[connKey{hostPort: p, guestPort: guestPort}]; !used {
			return p, true
		}
	}
	return 0, false
}

// expire ends handshakes and guest requests past their deadline, then
// re-arms the timer for the next one.
func (d *Unix) expire(now time.Time) {
	if !d.acceptResume.IsZero() && !now.Before(d.acceptResume) {
		d.resumeAccept()
	}
	for _, o := range d.fds {
		switch o := o.(type) {
		case *handshake:
			if !now.Before(o.deadline) {
				log.L.Debugf("vsock %s: handshake timed out", d.cfg.ID)
				d.dropHandshake(o)
			}
		case *conn:
			if o.state == stateConnecting && !now.Before(o.deadline) {
				log.L.Debugf("vsock %s: guest port %d did not answer", d.cfg.ID, o.key.guestPort)
				d.reset(o)
			}
		}
	}
	d.armTimer()
}

// armTimer sets the timer to the earliest deadline, or disarms it.
func (d *Unix) armTimer() {
	first := d.acceptResume
	for _, o := range d.fds {
		var t time.Time
		switch o := o.(type) {
		case *handshake:
			t = o.deadline
		case *conn:
			if o.state == stateConnecting {
				t = o.deadline
			}
		}
		if !t.IsZero() && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	var spec unix.ItimerSpec
	if !first.IsZero() {
		wait := max(time.Until(first), time.Millisecond)
		spec.Value = unix.NsecToTimespec(int64(wait))
	}
	if err := unix.TimerfdSettime(d.timer, 0, &spec, nil); err != nil {
		log.L.Errorf("vsock %s: arm timer: %v", d.cfg.ID, err)
	}
}
