package vsock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

const (
	testCID   = 42
	memSize   = 16 << 20
	rxBufSize = HeaderSize + 4096
)

type irqs struct {
	mu     sync.Mutex
	n      int
	broken []error
	notify chan struct{} // if set, gets a token (without blocking) per interrupt
}

func (r *irqs) Signal(uint32) error {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
	if r.notify != nil {
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

// guest is a fake vsock driver over the three queues.
type guest struct {
	t        testing.TB
	mem      *guestmem.Memory
	rx, tx   *vt.Driver
	kicks    []int
	rxBufs   map[uint32]uint64 // head -> buffer address
	pending  []Header          // packets received, not yet taken
	data     map[uint32][]byte // RW payloads by guest port, in order
	dev      *Unix
	irq      *irqs
	noRepost bool // collect does not post a new buffer for each one used
	empty    int  // rx buffers completed with nothing written
	txSent   int  // tx chains posted
	txDone   int  // tx chains completed
}

func newGuest(t testing.TB) (*guest, string) {
	t.Helper()
	return newGuestRx(t, 64)
}

// newGuestRx is newGuest with rxBufs receive buffers posted.
func newGuestRx(t testing.TB, rxBufs int) (*guest, string) {
	t.Helper()
	dir := t.TempDir()
	uds := filepath.Join(dir, "v.sock")
	loop, err := eventloop.New("test-vsock", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	dev, err := NewUnix(Config{ID: "vsock0", GuestCID: testCID, UDSPath: uds}, loop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	mem := vt.NewMemory(memSize)
	g := &guest{t: t, mem: mem, dev: dev, irq: &irqs{}, rxBufs: map[uint32]uint64{}, data: map[uint32][]byte{}}
	g.rx = vt.NewDriver(mem, 0x10000, QueueSize, 8<<20)
	g.tx = vt.NewDriver(mem, 8<<20, QueueSize, 15<<20)
	ev := vt.NewDriver(mem, 15<<20, EventQSize, memSize)
	qs := []*virtio.Queue{virtio.NewQueue(QueueSize), virtio.NewQueue(QueueSize), virtio.NewQueue(EventQSize)}
	features := dev.Features() | 1<<virtio.FVersion1
	for i, d := range []*vt.Driver{g.rx, g.tx, ev} {
		d.Configure(qs[i])
		if err := qs[i].Activate(mem, features); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		g.kicks = append(g.kicks, fd)
	}
	err = dev.Activate(virtio.Activation{Mem: mem, Features: features, Queues: qs, Kicks: g.kicks, Interrupt: g.irq,
		Broken: func(err error) { g.irq.mu.Lock(); g.irq.broken = append(g.irq.broken, err); g.irq.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Reset)
	g.postRx(rxBufs)
	return g, uds
}

func (g *guest) kick(q int) {
	if _, err := unix.Write(g.kicks[q], []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		g.t.Fatal(err)
	}
}

func (g *guest) postRx(n int) { g.postRxSize(n, rxBufSize) }

// postRxSize posts n receive buffers of size bytes.
func (g *guest) postRxSize(n int, size uint32) {
	for range n {
		a := g.rx.Alloc(uint64(size), 8)
		head := g.rx.AddChain(vt.Buf{Addr: a, Len: size, Write: true})
		g.rxBufs[uint32(head)] = a
	}
	g.kick(rxQueue)
}

// send posts one packet (header and payload in separate descriptors).
func (g *guest) send(h Header, payload []byte) {
	h.SrcCID, h.DstCID, h.Type, h.Len = testCID, HostCID, TypeStream, uint32(len(payload))
	if h.BufAlloc == 0 {
		h.BufAlloc = 1 << 20
	}
	ha := g.tx.Alloc(HeaderSize, 8)
	var b [HeaderSize]byte
	h.Encode(b[:])
	g.mem.WriteAt(b[:], ha)
	bufs := []vt.Buf{{Addr: ha, Len: HeaderSize}}
	if len(payload) > 0 {
		pa := g.tx.Alloc(uint64(len(payload)), 8)
		g.mem.WriteAt(payload, pa)
		bufs = append(bufs, vt.Buf{Addr: pa, Len: uint32(len(payload))})
	}
	g.tx.AddChain(bufs...)
	g.txSent++
	g.kick(txQueue)
}

// waitTx waits until the device completed every tx chain posted, so that
// more can be posted without overrunning the ring.
func (g *guest) waitTx() {
	g.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g.txDone < g.txSent {
		g.txDone += len(g.tx.TakeUsed())
		if time.Now().After(deadline) {
			g.t.Fatalf("the device completed %d of %d tx chains", g.txDone, g.txSent)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// collect takes the completed rx buffers and reposts as many.
func (g *guest) collect() {
	used := g.rx.TakeUsed()
	for _, u := range used {
		a := g.rxBufs[u.ID]
		delete(g.rxBufs, u.ID)
		if u.Len == 0 { // a buffer the device could not use
			g.empty++
			continue
		}
		if u.Len < HeaderSize {
			g.t.Fatalf("rx buffer completed with %d bytes", u.Len)
		}
		b := make([]byte, u.Len)
		g.mem.ReadAt(b, a)
		h, err := ParseHeader(b)
		if err != nil {
			g.t.Fatalf("device sent a bad header: %v", err)
		}
		if h.SrcCID != HostCID || h.DstCID != testCID || uint32(len(b)-HeaderSize) != h.Len {
			g.t.Fatalf("bad packet %+v (%d bytes)", h, len(b))
		}
		if h.Op == OpRW {
			g.data[h.DstPort] = append(g.data[h.DstPort], b[HeaderSize:]...)
		}
		g.pending = append(g.pending, h)
	}
	if len(used) > 0 && !g.noRepost {
		g.postRx(len(used))
	}
}

// expect waits for a packet with op to guest port and returns it; other
// packets stay pending.
func (g *guest) expect(port uint32, op uint16) Header {
	g.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		g.collect()
		for i, h := range g.pending {
			if h.DstPort == port && h.Op == op {
				g.pending = append(g.pending[:i], g.pending[i+1:]...)
				return h
			}
		}
		time.Sleep(time.Millisecond)
	}
	g.t.Fatalf("no %s for guest port %d; pending %+v", OpName(op), port, g.pending)
	return Header{}
}

// waitData waits until n bytes arrived for guest port.
func (g *guest) waitData(port uint32, n int) []byte {
	g.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		g.collect()
		if len(g.data[port]) >= n {
			return g.data[port]
		}
		time.Sleep(time.Millisecond)
	}
	g.t.Fatalf("guest port %d got %d bytes, want %d", port, len(g.data[port]), n)
	return nil
}

func (g *guest) noBroken() {
	g.t.Helper()
	g.irq.mu.Lock()
	defer g.irq.mu.Unlock()
	if len(g.irq.broken) > 0 {
		g.t.Fatalf("device broken: %v", g.irq.broken)
	}
}

// hostConnect dials the device socket and runs the CONNECT handshake.
func hostConnect(t testing.TB, g *guest, uds string, port uint32) (net.Conn, *bufio.Reader, Header) {
	t.Helper()
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "connect %d\n", port)
	req := g.expect(port, OpRequest)
	if req.SrcPort < firstHostPort || req.SrcPort > lastHostPort || req.BufAlloc != ConnBufSize {
		t.Fatalf("REQUEST %+v", req)
	}
	g.send(Header{SrcPort: port, DstPort: req.SrcPort, Op: OpResponse}, nil)
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("OK %d\n", req.SrcPort); line != want {
		t.Fatalf("handshake reply %q, want %q", line, want)
	}
	return c, r, req
}

func TestHostToGuest(t *testing.T) {
	g, uds := newGuest(t)
	c, r, req := hostConnect(t, g, uds, 1024)
	host := req.SrcPort
	msg := bytes.Repeat([]byte("host->guest "), 1000) // 12000 bytes: several rx buffers
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if got := g.waitData(1024, len(msg)); !bytes.Equal(got, msg) {
		t.Fatalf("guest got %d bytes, mismatch", len(got))
	}
	g.send(Header{SrcPort: 1024, DstPort: host, Op: OpRW}, []byte("guest->host"))
	buf := make([]byte, 11)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "guest->host" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	// The guest closes: SHUTDOWN both, the device answers RST and the
	// host sees EOF.
	g.send(Header{SrcPort: 1024, DstPort: host, Op: OpShutdown, Flags: ShutdownRcv | ShutdownSend}, nil)
	g.expect(1024, OpRst)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := r.Read(buf); err != io.EOF {
		t.Fatalf("host read after guest close: %d, %v (want EOF)", n, err)
	}
	g.noBroken()
}

func TestGuestToHost(t *testing.T) {
	g, uds := newGuest(t)
	l, err := net.Listen("unix", uds+"_1025")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g.send(Header{SrcPort: 5000, DstPort: 1025, Op: OpRequest}, nil)
	g.expect(5000, OpResponse)
	l.(*net.UnixListener).SetDeadline(time.Now().Add(3 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g.send(Header{SrcPort: 5000, DstPort: 1025, Op: OpRW}, []byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("host read %q %v", buf, err)
	}
	c.Write([]byte("pong"))
	if got := g.waitData(5000, 4); string(got) != "pong" {
		t.Fatalf("guest got %q", got)
	}
	// Guest half-close: the host reads EOF but can still write.
	g.send(Header{SrcPort: 5000, DstPort: 1025, Op: OpShutdown, Flags: ShutdownSend}, nil)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("host read after guest SHUTDOWN(send): %v, want EOF", err)
	}
	c.Write([]byte("more"))
	if got := g.waitData(5000, 8); string(got) != "pongmore" {
		t.Fatalf("guest got %q after half-close", got)
	}
	// The host closes: SHUTDOWN with both flags, the guest answers RST.
	c.Close()
	sh := g.expect(5000, OpShutdown)
	if sh.Flags != ShutdownRcv|ShutdownSend {
		t.Errorf("SHUTDOWN flags %d, want 3", sh.Flags)
	}
	g.send(Header{SrcPort: 5000, DstPort: 1025, Op: OpRst}, nil)
	g.noBroken()
}

func TestNoListenerGetsRst(t *testing.T) {
	g, _ := newGuest(t)
	g.send(Header{SrcPort: 6000, DstPort: 9999, Op: OpRequest}, nil)
	g.expect(6000, OpRst)
	// A packet for an unknown connection is answered with RST too.
	g.send(Header{SrcPort: 6001, DstPort: 9999, Op: OpRW}, []byte("x"))
	g.expect(6001, OpRst)
	g.noBroken()
}

func TestCredit(t *testing.T) {
	g, uds := newGuest(t)
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT 77\n")
	req := g.expect(77, OpRequest)
	// The guest has room for 10000 bytes only.
	g.send(Header{SrcPort: 77, DstPort: req.SrcPort, Op: OpResponse, BufAlloc: 10000}, nil)
	go c.Write(make([]byte, 100000))
	g.waitData(77, 10000)
	time.Sleep(50 * time.Millisecond)
	g.collect()
	if n := len(g.data[77]); n != 10000 {
		t.Fatalf("guest got %d bytes with 10000 bytes of credit", n)
	}
	// Consuming 6000 bytes allows 6000 more.
	g.send(Header{SrcPort: 77, DstPort: req.SrcPort, Op: OpCreditUpdate, BufAlloc: 10000, FwdCnt: 6000}, nil)
	g.waitData(77, 16000)
	time.Sleep(50 * time.Millisecond)
	g.collect()
	if n := len(g.data[77]); n != 16000 {
		t.Fatalf("guest got %d bytes, want 16000", n)
	}
	// CREDIT_REQUEST is answered with our counters.
	g.send(Header{SrcPort: 77, DstPort: req.SrcPort, Op: OpCreditRequest, BufAlloc: 10000, FwdCnt: 6000}, nil)
	if u := g.expect(77, OpCreditUpdate); u.BufAlloc != ConnBufSize {
		t.Errorf("CREDIT_UPDATE buf_alloc %d", u.BufAlloc)
	}
	g.noBroken()
}

func TestGuestOverrunsCredit(t *testing.T) {
	g, uds := newGuest(t)
	l, err := net.Listen("unix", uds+"_2000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g.send(Header{SrcPort: 7000, DstPort: 2000, Op: OpRequest}, nil)
	g.expect(7000, OpResponse)
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The host does not read; the guest sends 64 KiB packets until the
	// device's buffer (ConnBufSize) plus the socket buffer overflow.
	chunk := make([]byte, MaxPayload)
	for range 60 { // 60 x 64 KiB fits the tx heap
		g.send(Header{SrcPort: 7000, DstPort: 2000, Op: OpRW}, chunk)
		g.collect()
		for _, h := range g.pending {
			if h.Op == OpRst && h.DstPort == 7000 {
				g.noBroken()
				return
			}
		}
	}
	g.expect(7000, OpRst) // fails the test if the device never resets
	g.noBroken()
}

func TestManyConnections(t *testing.T) {
	g, uds := newGuest(t)
	const n = 32
	var conns []net.Conn
	var hosts []uint32
	for i := range n {
		c, _, req := hostConnect(t, g, uds, uint32(3000+i))
		conns = append(conns, c)
		hosts = append(hosts, req.SrcPort)
	}
	for i, c := range conns {
		fmt.Fprintf(c, "conn %d", i)
	}
	for i := range n {
		want := fmt.Sprintf("conn %d", i)
		if got := g.waitData(uint32(3000+i), len(want)); string(got) != want {
			t.Errorf("guest port %d got %q", 3000+i, got)
		}
	}
	seen := map[uint32]bool{}
	for _, p := range hosts {
		if seen[p] {
			t.Fatalf("host port %d used twice", p)
		}
		seen[p] = true
	}
	g.noBroken()
}

func TestHandshakeErrors(t *testing.T) {
	_, uds := newGuest(t)
	for _, line := range []string{"HELLO 1\n", "CONNECT x\n", "CONNECT 99999999999\n", strings.Repeat("A", 40)} {
		c, err := net.Dial("unix", uds)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(line))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, err := c.Read(make([]byte, 8)); err != io.EOF && !errors.Is(err, unix.ECONNRESET) {
			t.Errorf("handshake %q: read %d, %v; want EOF", line, n, err)
		}
		c.Close()
	}
}

// TestStaleEventIgnored: an epoll event left in a batch for a socket that
// was closed (its descriptor number now reused by a new connection) must
// not reach the new connection: a stale hang-up would end it.
func TestStaleEventIgnored(t *testing.T) {
	g, uds := newGuest(t)
	c, r, req := hostConnect(t, g, uds, 1030)
	var fd int32
	var gen int32
	g.dev.loop.Call(func() {
		cn := g.dev.conns[connKey{hostPort: req.SrcPort, guestPort: 1030}]
		fd, gen = int32(cn.fd), cn.gen
		g.dev.dispatch(unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLHUP, Fd: fd, Pad: gen - 1})
		if cn.hostHup || cn.readable {
			t.Errorf("stale event reached connection: hup %v readable %v", cn.hostHup, cn.readable)
		}
	})
	// The connection still carries data both ways.
	g.send(Header{SrcPort: 1030, DstPort: req.SrcPort, Op: OpRW}, []byte("ping\n"))
	line, err := r.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("host read %q, %v", line, err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if got := g.waitData(1030, 4); string(got) != "pong" {
		t.Fatalf("guest got %q", got)
	}
	// The same event with the current token is delivered.
	g.dev.loop.Call(func() {
		cn := g.dev.conns[connKey{hostPort: req.SrcPort, guestPort: 1030}]
		g.dev.dispatch(unix.EpollEvent{Events: unix.EPOLLHUP, Fd: fd, Pad: gen})
		if !cn.hostHup {
			t.Error("current event not delivered")
		}
	})
	g.noBroken()
}

func TestSocketMode(t *testing.T) {
	_, uds := newGuest(t)
	st, err := os.Stat(uds)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Fatalf("socket mode %o, want 600", m)
	}
}

// batches returns how many epoll batches the device has served.
func (g *guest) batches() uint64 {
	var n uint64
	g.dev.loop.Call(func() { n = g.dev.batches })
	return n
}

// TestPartialConnectLine: a handshake socket holding part of its CONNECT
// line does not keep the device's loop busy, the rest of the line
// completes it, and a client that leaves mid-line is dropped at once.
func TestPartialConnectLine(t *testing.T) {
	g, uds := newGuest(t)
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("CONNECT 12")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	before := g.batches()
	time.Sleep(200 * time.Millisecond)
	if n := g.batches() - before; n > 2 {
		t.Fatalf("the device's loop ran %d batches in 200 ms on a partial handshake line", n)
	}
	if _, err := c.Write([]byte("34\n")); err != nil {
		t.Fatal(err)
	}
	g.expect(1234, OpRequest)

	// A client that half-closes with a partial line hears EOF long
	// before the handshake deadline.
	c2, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("CONN"))
	c2.(*net.UnixConn).CloseWrite()
	c2.SetReadDeadline(time.Now().Add(connectTimeout / 2))
	if n, err := c2.Read(make([]byte, 8)); err != io.EOF && !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("read after leaving mid-handshake: %d, %v; want EOF before the deadline", n, err)
	}
	g.noBroken()
}

// TestHeaderOnlyRxBuffer: an rx buffer with room for the header only is
// completed empty while host data waits; the data is not mistaken for
// the host's EOF and arrives in the next real buffer.
func TestHeaderOnlyRxBuffer(t *testing.T) {
	g, uds := newGuestRx(t, 4)
	c, r, req := hostConnect(t, g, uds, 1500)
	g.noRepost = true
	// Four buffers' worth, and 100 bytes that find no buffer.
	msg := bytes.Repeat([]byte("0123456789abcdef"), (4*4096+100)/16)
	msg = append(msg, "tail"...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	g.waitData(1500, 4*4096)
	time.Sleep(20 * time.Millisecond)
	g.postRxSize(3, HeaderSize)
	deadline := time.Now().Add(3 * time.Second)
	for g.collect(); g.empty < 3; g.collect() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 header-only buffers completed empty; pending %+v", g.empty, g.pending)
		}
		time.Sleep(time.Millisecond)
	}
	for _, h := range g.pending {
		if h.DstPort == 1500 && h.Op != OpRequest && h.Op != OpRW {
			t.Fatalf("the guest got %s while the host connection is open", OpName(h.Op))
		}
	}
	g.postRx(4)
	if got := g.waitData(1500, len(msg)); !bytes.Equal(got, msg) {
		t.Fatalf("guest got %d bytes, want %d", len(got), len(msg))
	}
	g.send(Header{SrcPort: 1500, DstPort: req.SrcPort, Op: OpRW}, []byte("still\n"))
	if line, err := r.ReadString('\n'); err != nil || line != "still\n" {
		t.Fatalf("host read %q, %v", line, err)
	}
	g.noBroken()
}

// TestGuestRstThenSamePorts: a connection the guest resets while it has
// data queued for the guest leaves nothing behind that could reach a new
// connection on the same ports.
func TestGuestRstThenSamePorts(t *testing.T) {
	g, uds := newGuestRx(t, 1)
	g.noRepost = true
	l, err := net.Listen("unix", uds+"_1025")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g.send(Header{SrcPort: 5000, DstPort: 1025, Op: OpRequest}, nil)
	g.expect(5000, OpResponse) // the only rx buffer
	c1, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c1.Write([]byte("for the first connection"))
	time.Sleep(20 * time.Millisecond) // queued: no rx buffer
	g.send(Header{SrcPort: 5000, DstPort: 1025, Op: OpRst}, nil)
	g.waitTx()
	g.send(Header{SrcPort: 5000, DstPort: 1025, Op: OpRequest}, nil)
	c2, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("second"))
	g.postRx(4)
	g.expect(5000, OpResponse)
	if got := g.waitData(5000, 6); string(got) != "second" {
		t.Fatalf("guest got %q on the new connection", got)
	}
	time.Sleep(20 * time.Millisecond)
	g.collect()
	for _, h := range g.pending {
		if h.DstPort == 5000 && (h.Op == OpRst || h.Op == OpShutdown) {
			t.Fatalf("the new connection got %s", OpName(h.Op))
		}
	}
	if got := g.data[5000]; string(got) != "second" {
		t.Fatalf("guest got %q on the new connection", got)
	}
	g.noBroken()
}

// lockedBuffer collects log output written from the device's loop.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestConnLimitCountsResetConns: connections reset by the device and
// waiting for an rx buffer to carry their RST count against MaxConns, so
// a guest that posts no rx buffers cannot make them pile up. The guest's
// thousand protocol errors make a warning a second, not a thousand.
func TestConnLimitCountsResetConns(t *testing.T) {
	logs := &lockedBuffer{}
	out, level := logrus.StandardLogger().Out, logrus.GetLevel()
	logrus.SetOutput(logs)
	logrus.SetLevel(logrus.InfoLevel)
	t.Cleanup(func() { logrus.SetOutput(out); logrus.SetLevel(level) })
	start := time.Now()
	g, uds := newGuestRx(t, 0)
	l, err := net.Listen("unix", uds+"_1025")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for i := range MaxConns + 20 {
		port := uint32(10000 + i)
		g.send(Header{SrcPort: port, DstPort: 1025, Op: OpRequest}, nil)
		// RESPONSE from the guest's side is a protocol error: reset.
		g.send(Header{SrcPort: port, DstPort: 1025, Op: OpResponse}, nil)
		if i%64 == 63 {
			g.waitTx()
		}
	}
	g.waitTx()
	var conns, fds int
	g.dev.loop.Call(func() { conns, fds = len(g.dev.conns), len(g.dev.fds) })
	if conns > MaxConns {
		t.Fatalf("%d connections held (%d with a host socket), limit %d", conns, fds, MaxConns)
	}
	warnings := strings.Count(logs.String(), "level=warning")
	if limit := 1 + int(time.Since(start)/time.Second); warnings > limit {
		t.Fatalf("%d warnings logged in %v for the guest's protocol errors; want at most one a second", warnings, time.Since(start))
	}
	if warnings == 0 {
		t.Fatal("no warning logged for the guest's protocol errors")
	}
	g.noBroken()
}

// TestMalformedHeaderResetsConn: a malformed packet on a live connection
// closes its host socket too, not just the guest's side.
func TestMalformedHeaderResetsConn(t *testing.T) {
	g, uds := newGuest(t)
	c, r, req := hostConnect(t, g, uds, 1600)
	var b [HeaderSize]byte
	h := Header{SrcCID: testCID, DstCID: HostCID, SrcPort: 1600, DstPort: req.SrcPort, Type: TypeStream,
		Op: OpCreditUpdate, Len: 5, BufAlloc: 1 << 20}
	h.Encode(b[:])
	a := g.tx.Alloc(HeaderSize+5, 8)
	g.mem.WriteAt(b[:], a)
	g.tx.AddChain(vt.Buf{Addr: a, Len: HeaderSize + 5})
	g.txSent++
	g.kick(txQueue)
	g.expect(1600, OpRst)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := r.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("host read after a malformed packet: %d, %v; want EOF", n, err)
	}
	g.noBroken()
}

// TestAcceptOutOfDescriptors: when accept fails for want of descriptors
// the device leaves its listener alone for a while instead of spinning
// on it, and takes the waiting client once descriptors are free again.
func TestAcceptOutOfDescriptors(t *testing.T) {
	g, uds := newGuest(t)
	// The client's socket takes the last descriptor the limit allows.
	restore := vt.LastFd(t)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: uds}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	before := g.batches()
	time.Sleep(300 * time.Millisecond)
	if n := g.batches() - before; n > 20 {
		t.Fatalf("the device's loop ran %d batches in 300 ms with accept failing", n)
	}
	restore()
	if _, err := unix.Write(fd, []byte("CONNECT 88\n")); err != nil {
		t.Fatal(err)
	}
	g.expect(88, OpRequest)
	g.noBroken()
}

// TestBatchedHostRead: data waiting on a host socket fills several rx
// buffers with one read, each a packet of its own in stream order, and
// the buffers the read did not reach go back to the ring for the next.
func TestBatchedHostRead(t *testing.T) {
	g, uds := newGuestRx(t, 1)
	g.noRepost = true // the handshake's REQUEST takes the only buffer
	c, _, _ := hostConnect(t, g, uds, 1024)
	const waiting = 16 * 4096 // 16 of the guest's buffers
	msg := make([]byte, waiting+10000+9*4096)
	for i := range msg {
		msg[i] = byte(i % 251)
	}
	if _, err := c.Write(msg[:waiting]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // all of it in the socket before any buffer
	reads := func() uint64 {
		var n uint64
		g.dev.loop.Call(func() { n = g.dev.hostReads })
		return n
	}
	before := reads()
	g.postRx(24)
	if got := g.waitData(1024, waiting); !bytes.Equal(got, msg[:len(got)]) {
		t.Fatal("guest data differs from what the host sent")
	}
	// One read takes it all; a second finds the socket empty.
	if n := reads() - before; n > 2 {
		t.Errorf("%d reads of the host socket for %d waiting bytes and 24 buffers, want at most 2", n, waiting)
	}
	for _, h := range g.pending {
		if h.Op == OpRW && (h.Len == 0 || h.Len > 4096) {
			t.Errorf("packet of %d bytes in a 4096-byte buffer", h.Len)
		}
	}
	// 8 buffers are left: 10000 more bytes take 3 of them.
	if _, err := c.Write(msg[waiting : waiting+10000]); err != nil {
		t.Fatal(err)
	}
	g.waitData(1024, waiting+10000)
	// The 5 left and 4 more take 9 full buffers: a read that did not
	// reach a buffer gave it back intact.
	g.postRx(4)
	if _, err := c.Write(msg[waiting+10000:]); err != nil {
		t.Fatal(err)
	}
	if got := g.waitData(1024, len(msg)); !bytes.Equal(got, msg) {
		t.Fatal("guest data differs from what the host sent")
	}
	time.Sleep(20 * time.Millisecond)
	g.collect()
	if len(g.data[1024]) != len(msg) || g.empty != 0 {
		t.Fatalf("guest got %d bytes (want %d), %d buffers completed empty", len(g.data[1024]), len(msg), g.empty)
	}
	g.noBroken()
}
