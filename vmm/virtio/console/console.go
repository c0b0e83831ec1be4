// Package console owns the virtio-console device (one port, receiveq 0
// and transmitq 1, VIRTIO_CONSOLE_F_SIZE) whose host side is a listening
// unix socket: one client at a time reads what the guest writes to its
// /dev/hvc0 and writes what the guest reads. Further clients are refused
// while one is connected; after a client leaves the next one is accepted.
// Without a client the guest's output is discarded, as on a console with
// nothing attached. The socket file must not exist beforehand; it is
// created with mode 0600 and removed by Close.
//
// Concurrency: queue processing runs on the device's event loop. Socket
// I/O runs on goroutines (an acceptor, and a reader and a writer per
// client) blocked in Go's poller; they exchange bounded byte buffers with
// the loop under mu, and eventfds wake the loop when input arrives or
// buffered output drains. Bounded buffers give back-pressure both ways:
// a client that does not read stalls the guest's transmit queue, a guest
// that does not read stalls the client's socket. Lock order: mu only.
package console

import (
	"encoding/binary"
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

// Feature bits and geometry.
const (
	FSize      = 0
	QueueSize  = 256
	RxQueue    = 0
	TxQueue    = 1
	ConfigSize = 12 // cols, rows, max_nr_ports, emerg_wr
	Cols       = 80
	Rows       = 24
	// bufMax bounds the bytes buffered in each direction.
	bufMax = 64 << 10
	// maxChain bounds one transmit chain; Linux sends at most a page.
	maxChain = 1 << 20
	// MaxPathLen is the longest socket path (sun_path less the NUL).
	MaxPathLen = 107
	// acceptPause is the wait before accept is retried after it failed
	// for want of descriptors or memory.
	acceptPause = 100 * time.Millisecond
	// hupPoll is how often a reader that waits for the guest to take
	// input checks whether its client left: it does not read meanwhile,
	// so it would not see the end of the stream, and new clients would
	// be refused until the guest reads.
	hupPoll = 250 * time.Millisecond
)

// Console is a virtio-console device.
type Console struct {
	id   string
	path string
	loop *eventloop.Loop
	lf   *os.File // listening socket
	rxEv int      // eventfd: input buffered
	txEv int      // eventfd: output drained
	wg   sync.WaitGroup

	mu     sync.Mutex
	cond   *sync.Cond
	client *os.File
	in     []byte // client -> guest
	out    []byte // guest -> client
	closed bool

	// Owned by the loop while active.
	act      *virtio.Activation
	rxq, txq *virtio.Queue
	kicks    [2]int
	stopped  bool
	chain    virtio.Chain
}

// New creates the listening socket at path (which must not exist) and
// starts accepting clients; the queues will be served on loop.
func New(id, path string, loop *eventloop.Loop) (c *Console, err error) {
	if path == "" || len(path) > MaxPathLen {
		return nil, fmt.Errorf("console %s: socket path length %d out of range [1, %d]", id, len(path), MaxPathLen)
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("console %s: socket file %q already exists (remove it first)", id, path)
	}
	c = &Console{id: id, path: path, loop: loop, rxEv: -1, txEv: -1, kicks: [2]int{-1, -1}}
	c.cond = sync.NewCond(&c.mu)
	defer func() {
		if err != nil {
			c.closeFds()
		}
	}()
	if c.rxEv, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("console %s: eventfd: %w", id, err)
	}
	if c.txEv, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("console %s: eventfd: %w", id, err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("console %s: socket: %w", id, err)
	}
	if err = unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("console %s: bind %q: %w", id, path, err)
	}
	c.lf = os.NewFile(uintptr(fd), path)
	if err = os.Chmod(path, 0o600); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("console %s: %w", id, err)
	}
	if err = unix.Listen(fd, 1); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("console %s: listen %q: %w", id, path, err)
	}
	c.wg.Add(1)
	go c.acceptLoop()
	log.L.Debugf("virtio-console %s: listening on %s, loop %s", id, path, loop.Name())
	return c, nil
}

func (c *Console) closeFds() {
	if c.lf != nil {
		c.lf.Close()
	}
	for _, fd := range []int{c.rxEv, c.txEv} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// ID is the console id.
func (c *Console) ID() string { return c.id }

// Path is the socket path.
func (c *Console) Path() string { return c.path }

// Close resets the device, disconnects the client, removes the socket
// file and waits for the socket goroutines.
func (c *Console) Close() error {
	c.Reset()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	err := c.lf.Close()
	c.dropClient(nil)
	c.wg.Wait()
	rmErr := os.Remove(c.path)
	if errors.Is(rmErr, os.ErrNotExist) {
		rmErr = nil
	}
	c.lf = nil
	c.closeFds()
	return errors.Join(err, rmErr)
}

// acceptLoop accepts clients until the listener is closed.
func (c *Console) acceptLoop() {
	defer c.wg.Done()
	rc, err := c.lf.SyscallConn()
	if err != nil {
		log.L.Errorf("virtio-console %s: %v", c.id, err)
		return
	}
	// Failed accepts and refused clients are logged once a minute: a
	// client retrying in a loop must not flood the log.
	warns, refusals := lograte.Limiter{Every: time.Minute}, lograte.Limiter{Every: time.Minute}
	for {
		var nfd int
		var aerr error
		err := rc.Read(func(fd uintptr) bool {
			nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			return !errors.Is(aerr, unix.EAGAIN)
		})
		if err != nil {
			return // listener closed
		}
		if errors.Is(aerr, unix.EINTR) || errors.Is(aerr, unix.ECONNABORTED) {
			continue
		}
		if aerr != nil {
			// Out of descriptors or memory: the client waits in the
			// backlog and accept is retried.
			warns.Warn(fmt.Sprintf("virtio-console %s: accept: %v; retrying", c.id, aerr))
			time.Sleep(acceptPause)
			continue
		}
		f := os.NewFile(uintptr(nfd), c.path+" client")
		c.mu.Lock()
		busy := c.client != nil || c.closed
		if !busy {
			c.client = f
			c.in, c.out = nil, nil
		}
		c.mu.Unlock()
		if busy {
			refusals.Warn(fmt.Sprintf("virtio-console %s: refusing a second client (one connection at a time)", c.id))
			f.Close()
			continue
		}
		c.wg.Add(2)
		go c.reader(f)
		go c.writer(f)
	}
}

// dropClient disconnects f (nil: whoever is connected).
func (c *Console) dropClient(f *os.File) {
	c.mu.Lock()
	cur := c.client
	if cur == nil || (f != nil && cur != f) {
		c.mu.Unlock()
		return
	}
	c.client, c.out = nil, nil
	c.cond.Broadcast()
	c.mu.Unlock()
	cur.Close()
	_ = rawsys.Signal(c.txEv) // output the guest is blocked on is now discarded
}

func (c *Console) reader(f *os.File) {
	defer c.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			c.mu.Lock()
			for len(c.in) >= bufMax && c.client == f {
				if !c.waitRoom(f) {
					c.mu.Unlock()
					c.dropClient(f)
					return
				}
			}
			if c.client != f {
				c.mu.Unlock()
				return
			}
			c.in = append(c.in, buf[:n]...)
			c.mu.Unlock()
			_ = rawsys.Signal(c.rxEv)
		}
		if err != nil {
			c.dropClient(f)
			return
		}
	}
}

// waitRoom waits, with mu held, until the guest takes input or hupPoll
// passes. It reports false when client f has hung up meanwhile.
func (c *Console) waitRoom(f *os.File) bool {
	t := time.AfterFunc(hupPoll, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	c.cond.Wait()
	t.Stop()
	return c.client != f || !hungUp(f)
}

// hungUp reports whether the peer of socket f has shut down its sending
// side (or gone), without reading what it sent: a private epoll set
// asked for EPOLLRDHUP (the calls the VMM's seccomp lists already allow;
// poll(2) is not among them).
func hungUp(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	err = rc.Control(func(fd uintptr) {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return // cannot tell: the guest's reading still frees the reader
		}
		defer unix.Close(epfd)
		if rawsys.EpollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLRDHUP}) != nil {
			return
		}
		var ev [1]unix.EpollEvent
		if n, err := rawsys.EpollWaitNow(epfd, ev[:]); err == nil && n > 0 {
			gone = ev[0].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		}
	})
	return err != nil || gone
}

func (c *Console) writer(f *os.File) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		for len(c.out) == 0 && c.client == f {
			c.cond.Wait()
		}
		if c.client != f {
			c.mu.Unlock()
			return
		}
		data := c.out
		c.out = nil
		c.mu.Unlock()
		_ = rawsys.Signal(c.txEv)
		if _, err := f.Write(data); err != nil {
			c.dropClient(f)
			return
		}
	}
}

// DeviceID implements virtio.Device.
func (c *Console) DeviceID() uint32 { return virtio.IDConsole }

// Features implements virtio.Device.
func (c *Console) Features() uint64 {
	return 1<<FSize | 1<<virtio.FIndirectDesc | 1<<virtio.FEventIdx
}

// QueueMaxSizes implements virtio.Device.
func (c *Console) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device.
func (c *Console) ReadConfig(offset uint64, data []byte) {
	clear(data)
	var b [ConfigSize]byte
	binary.LittleEndian.PutUint16(b[0:], Cols)
	binary.LittleEndian.PutUint16(b[2:], Rows)
	binary.LittleEndian.PutUint32(b[4:], 1)
	if offset < ConfigSize {
		copy(data, b[offset:])
	}
}

// WriteConfig implements virtio.Device: emerg_wr is not offered, so
// writes are ignored.
func (c *Console) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (c *Console) Activate(a virtio.Activation) error {
	if len(a.Queues) != 2 || len(a.Kicks) != 2 {
		return fmt.Errorf("virtio-console %s: %d queues, want 2", c.id, len(a.Queues))
	}
	var err error
	c.loop.Call(func() {
		c.act, c.rxq, c.txq = &a, a.Queues[RxQueue], a.Queues[TxQueue]
		c.stopped = false
		added := []int{}
		for _, h := range []struct {
			fd int
			f  func()
		}{{a.Kicks[RxQueue], c.onRx}, {a.Kicks[TxQueue], c.onTx}, {c.rxEv, c.onRx}, {c.txEv, c.onTx}} {
			if err = c.loop.Add(h.fd, h.f); err != nil {
				break
			}
			added = append(added, h.fd)
		}
		c.kicks = [2]int{a.Kicks[RxQueue], a.Kicks[TxQueue]}
		if err != nil {
			for _, fd := range added {
				_ = c.loop.Remove(fd)
			}
			c.act, c.rxq, c.txq = nil, nil, nil
		}
	})
	if err != nil {
		return fmt.Errorf("virtio-console %s: %w", c.id, err)
	}
	return nil
}

// Reset implements virtio.Device.
func (c *Console) Reset() {
	c.loop.Call(func() {
		if c.act == nil {
			return
		}
		for _, fd := range []int{c.kicks[0], c.kicks[1], c.rxEv, c.txEv} {
			_ = c.loop.Remove(fd)
		}
		c.act, c.rxq, c.txq = nil, nil, nil
	})
}

func (c *Console) fail(err error) {
	c.stopped = true
	if c.act != nil {
		c.act.Broken(err)
	}
}

func (c *Console) signal(q *virtio.Queue) {
	need, err := q.Flush()
	if err != nil {
		c.fail(err)
		return
	}
	if need {
		if err := c.act.Interrupt.Signal(virtio.InterruptVring); err != nil {
			log.L.Errorf("virtio-console %s: %v", c.id, err)
		}
	}
}

// pop takes the next chain of q, arming the notification when empty.
func (c *Console) pop(q *virtio.Queue) (bool, error) {
	for {
		ok, err := q.Pop(&c.chain)
		if err != nil || ok {
			return ok, err
		}
		more, err := q.ArmNotify()
		if err != nil || !more {
			return false, err
		}
	}
}

// onRx moves buffered client input into the guest's receive buffers.
func (c *Console) onRx() {
	_ = rawsys.Drain(c.kicks[RxQueue])
	_ = rawsys.Drain(c.rxEv)
	if c.act == nil || c.stopped {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Wake a reader waiting for room whenever some was made, also when the
	// ring breaks mid-batch: else it sleeps on, never sees its client
	// leave, and every new client is refused.
	defer func(had int) {
		if len(c.in) < had {
			c.cond.Broadcast()
		}
	}(len(c.in))
	moved := false
	for len(c.in) > 0 {
		ok, err := c.pop(c.rxq)
		if err != nil {
			c.fail(err)
			return
		}
		if !ok {
			break
		}
		n := 0
		for _, d := range c.chain.Descs {
			if !d.Write || n == len(c.in) {
				continue
			}
			dst, err := c.act.Mem.Slice(d.Addr, min(uint64(d.Len), uint64(len(c.in)-n)))
			if err != nil {
				c.fail(fmt.Errorf("%w: rx buffer: %v", virtio.ErrBroken, err))
				return
			}
			n += copy(dst, c.in[n:])
		}
		c.in = c.in[n:]
		if err := c.rxq.Push(c.chain.Head, uint32(n)); err != nil {
			c.fail(err)
			return
		}
		moved = true
	}
	if len(c.in) == 0 {
		c.in = nil
	}
	if moved {
		c.signal(c.rxq)
	}
}

// onTx moves the guest's output to the client's buffer (or discards it
// without a client); it stops while the buffer is full.
func (c *Console) onTx() {
	_ = rawsys.Drain(c.kicks[TxQueue])
	_ = rawsys.Drain(c.txEv)
	if c.act == nil || c.stopped {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Wake the writer whenever output was added, also when the ring
	// breaks mid-batch: else what was taken sits unsent.
	defer func(had int) {
		if len(c.out) > had {
			c.cond.Broadcast()
		}
	}(len(c.out))
	done := false
	for {
		ok, err := c.pop(c.txq)
		if err != nil {
			c.fail(err)
			return
		}
		if !ok {
			break
		}
		size := uint64(0)
		for _, d := range c.chain.Descs {
			if !d.Write {
				size += uint64(d.Len)
			}
		}
		if size > maxChain {
			log.L.Debugf("virtio-console %s: dropping a %d-byte transmit buffer", c.id, size)
		} else if c.client != nil && len(c.out) > 0 && uint64(len(c.out))+size > bufMax {
			c.txq.Undo() // the writer's poke resumes us
			break
		}
		for _, d := range c.chain.Descs {
			if d.Write || c.client == nil || size > maxChain {
				continue
			}
			src, err := c.act.Mem.Slice(d.Addr, uint64(d.Len))
			if err != nil {
				c.fail(fmt.Errorf("%w: tx buffer: %v", virtio.ErrBroken, err))
				return
			}
			c.out = append(c.out, src...)
		}
		if err := c.txq.Push(c.chain.Head, 0); err != nil {
			c.fail(err)
			return
		}
		done = true
	}
	if done {
		c.signal(c.txq)
	}
}
