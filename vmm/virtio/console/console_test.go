package console

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

const memSize = 4 << 20

type irq struct{}

func (irq) Signal(uint32) error { return nil }

type rig struct {
	t      *testing.T
	mem    *guestmem.Memory
	rx, tx *vt.Driver
	dev    *Console
	kicks  [2]int
	path   string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	return newRigBroken(t, func(err error) { t.Errorf("broken: %v", err) })
}

// newRigBroken is newRig with broken as the Activation's Broken.
func newRigBroken(t *testing.T, broken func(error)) *rig {
	t.Helper()
	loop, err := eventloop.New("test-console", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	path := filepath.Join(t.TempDir(), "console.sock")
	dev, err := New("console0", path, loop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	mem := vt.NewMemory(memSize)
	r := &rig{t: t, mem: mem, dev: dev, path: path}
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
		r.kicks[i], _ = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		fd := r.kicks[i]
		t.Cleanup(func() { unix.Close(fd) })
	}
	ir := irq{}
	err = dev.Activate(virtio.Activation{Mem: mem, Features: features, Queues: qs, Kicks: r.kicks[:], Interrupt: ir,
		Broken: broken})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) kick(q int) { unix.Write(r.kicks[q], []byte{1, 0, 0, 0, 0, 0, 0, 0}) }

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

func (r *rig) dial() net.Conn {
	r.t.Helper()
	c, err := net.Dial("unix", r.path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// guestWrite transmits s as the guest would.
func (r *rig) guestWrite(s string) {
	a := r.tx.Alloc(uint64(len(s)), 8)
	r.mem.WriteAt([]byte(s), a)
	r.tx.AddChain(vt.Buf{Addr: a, Len: uint32(len(s))})
	r.kick(TxQueue)
	r.wait(r.tx, 1)
}

// guestRead posts a receive buffer and returns what arrives in it.
func (r *rig) guestRead(size uint32) string {
	a := r.rx.Alloc(uint64(size), 8)
	r.rx.AddChain(vt.Buf{Addr: a, Len: size, Write: true})
	r.kick(RxQueue)
	u := r.wait(r.rx, 1)[0]
	b := make([]byte, u.Len)
	r.mem.ReadAt(b, a)
	return string(b)
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes from the console socket: %v", n, err)
	}
	return string(b)
}

func TestRoundTripAndReconnect(t *testing.T) {
	r := newRig(t)
	fi, err := os.Stat(r.path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file %v (%v): want a socket with mode 0600", fi, err)
	}
	// Output without a client is discarded.
	r.guestWrite("lost\n")
	c := r.dial()
	time.Sleep(20 * time.Millisecond) // let the acceptor take it
	r.guestWrite("hello from the guest\n")
	if got := readN(t, c, 21); got != "hello from the guest\n" {
		t.Errorf("client read %q", got)
	}
	c.Write([]byte("ls /\n"))
	if got := r.guestRead(64); got != "ls /\n" {
		t.Errorf("guest read %q", got)
	}
	// A second client is refused while the first is connected.
	c2 := r.dial()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("second client: read %d, %v; want EOF (refused)", n, err)
	}
	// Reconnect: the next client after the first leaves gets the console.
	c.Close()
	time.Sleep(50 * time.Millisecond)
	c3 := r.dial()
	time.Sleep(20 * time.Millisecond)
	r.guestWrite("again\n")
	if got := readN(t, c3, 6); got != "again\n" {
		t.Errorf("reconnected client read %q", got)
	}
	c3.Write([]byte("x"))
	if got := r.guestRead(8); got != "x" {
		t.Errorf("guest read %q after reconnect", got)
	}
	r.dev.Close()
	if _, err := os.Stat(r.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after Close: %v", err)
	}
}

func TestLargeTransfer(t *testing.T) {
	r := newRig(t)
	c := r.dial()
	time.Sleep(20 * time.Millisecond)
	// 512 KiB from the client, read by the guest in 4 KiB buffers: the
	// 64 KiB bound applies back-pressure to the socket without loss.
	want := bytes.Repeat([]byte("0123456789abcdef"), 32<<10)
	go c.Write(want)
	var got []byte
	for len(got) < len(want) {
		got = append(got, r.guestRead(4096)...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("guest got %d bytes, differs from the %d sent", len(got), len(want))
	}
	// 256 KiB from the guest in one go.
	out := strings.Repeat("z", 256<<10)
	go func() {
		for i := 0; i < len(out); i += 4096 {
			a := r.tx.Alloc(4096, 8)
			r.mem.WriteAt([]byte(out[i:i+4096]), a)
			r.tx.AddChain(vt.Buf{Addr: a, Len: 4096})
			r.kick(TxQueue)
			if i%(64<<10) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	if s := readN(t, c, len(out)); s != out {
		t.Fatal("client got different data")
	}
}

func TestExistingPath(t *testing.T) {
	loop, err := eventloop.New("test-console", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	p := filepath.Join(t.TempDir(), "exists")
	os.WriteFile(p, nil, 0o644)
	if _, err := New("c", p, loop); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("New over an existing file: %v", err)
	}
	if _, err := New("c", "/"+strings.Repeat("a", 120), loop); err == nil {
		t.Error("New accepted a 121-byte path")
	}
}

func TestConfig(t *testing.T) {
	r := newRig(t)
	b := make([]byte, ConfigSize)
	r.dev.ReadConfig(0, b[:4])
	r.dev.ReadConfig(4, b[4:8])
	want := []byte{80, 0, 24, 0, 1, 0, 0, 0}
	if !bytes.Equal(b[:8], want) {
		t.Errorf("config % x, want % x", b[:8], want)
	}
}

// A guest that breaks the receive ring after taking some input must still
// wake the socket reader waiting for the room it made: else the reader
// never sees its client leave and every later client is refused.
func TestBrokenReceiveWakesReader(t *testing.T) {
	broke := make(chan error, 1)
	r := newRigBroken(t, func(err error) {
		select {
		case broke <- err:
		default:
		}
	})
	c := r.dial().(*net.UnixConn)
	client := func() (*os.File, int) {
		r.dev.mu.Lock()
		defer r.dev.mu.Unlock()
		return r.dev.client, len(r.dev.in)
	}
	poll := func(what string, done func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !done(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	poll("the client was not accepted", func() bool { f, _ := client(); return f != nil })
	// The buffer full and a read's worth more: the reader waits for room
	// once the client's socket is empty.
	if _, err := c.Write(make([]byte, bufMax+4096)); err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	poll("the reader did not fill the input buffer", func() bool {
		queued := -1
		rc.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		_, in := client()
		return queued == 0 && in >= bufMax
	})
	// One buffer the device fills, then one outside RAM that breaks it.
	a := r.rx.Alloc(4096, 8)
	r.rx.AddChain(vt.Buf{Addr: a, Len: 4096, Write: true})
	r.rx.AddChain(vt.Buf{Addr: memSize + 4096, Len: 100, Write: true})
	r.kick(RxQueue)
	select {
	case <-broke:
	case <-time.After(5 * time.Second):
		t.Fatal("a receive buffer outside RAM did not break the device")
	}
	c.Close()
	poll("the console did not notice its client leave", func() bool { f, _ := client(); return f == nil })
}

// Output the device took off the transmit ring before the ring broke must
// still reach the client: the writer has to be woken for it.
func TestBrokenTransmitSendsOutput(t *testing.T) {
	broke := make(chan error, 1)
	r := newRigBroken(t, func(err error) {
		select {
		case broke <- err:
		default:
		}
	})
	c := r.dial()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		r.dev.mu.Lock()
		accepted := r.dev.client != nil
		r.dev.mu.Unlock()
		if accepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client was not accepted")
		}
	}
	a := r.tx.Alloc(3, 8)
	r.mem.WriteAt([]byte("hi\n"), a)
	r.tx.AddChain(vt.Buf{Addr: a, Len: 3})
	r.tx.AddChain(vt.Buf{Addr: memSize + 4096, Len: 3}) // outside RAM
	r.kick(TxQueue)
	select {
	case <-broke:
	case <-time.After(5 * time.Second):
		t.Fatal("a transmit buffer outside RAM did not break the device")
	}
	if got := readN(t, c, 3); got != "hi\n" {
		t.Errorf("client read %q", got)
	}
}

// TestAcceptOutOfDescriptors: a client that arrives while the process is
// out of descriptors gets the console once descriptors are free again.
func TestAcceptOutOfDescriptors(t *testing.T) {
	r := newRig(t)
	// The client's socket takes the last descriptor the limit allows.
	restore := vt.LastFd(t)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: r.path}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // accept fails at least once
	restore()
	deadline := time.Now().Add(3 * time.Second)
	for {
		r.dev.mu.Lock()
		connected := r.dev.client != nil
		r.dev.mu.Unlock()
		if connected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the console did not take the client once descriptors were free")
		}
		time.Sleep(time.Millisecond)
	}
	r.guestWrite("after\n")
	b := make([]byte, 6)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 3}); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Read(fd, b); err != nil || string(b[:n]) != "after\n" {
		t.Fatalf("client read %q, %v", b[:max(n, 0)], err)
	}
}

// TestDepartedClientNoticed: a client that leaves while its input waits
// for the guest to make room is noticed without the guest reading, and
// the next client gets the console.
func TestDepartedClientNoticed(t *testing.T) {
	r := newRig(t)
	c := r.dial()
	deadline := time.Now().Add(3 * time.Second)
	waitClient := func(want bool, what string) {
		t.Helper()
		for {
			r.dev.mu.Lock()
			connected, in := r.dev.client != nil, len(r.dev.in)
			r.dev.mu.Unlock()
			if connected == want && (!want || in >= bufMax) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: client connected %v, %d bytes of input buffered", what, connected, in)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// More input than the device buffers; the guest reads none of it.
	if _, err := c.Write(make([]byte, bufMax+8192)); err != nil {
		t.Fatal(err)
	}
	waitClient(true, "the input buffer fills")
	c.Close()
	waitClient(false, "the client left")
	c2 := r.dial()
	time.Sleep(20 * time.Millisecond) // let the acceptor take it
	r.guestWrite("next\n")
	if got := readN(t, c2, 5); got != "next\n" {
		t.Fatalf("the next client read %q", got)
	}
}
