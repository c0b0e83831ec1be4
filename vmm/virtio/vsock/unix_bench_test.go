package vsock

import (
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// BenchmarkUnixHostToGuest moves data from a host socket into the guest's
// 4 KiB rx buffers through the unix backend's event loop: the receive
// path's cost per MiB (syscalls, copies, ring work), which the lab's
// vsock rows pay under emulation. The guest reposts each buffer as it
// takes it and returns credit every 256 KiB, as Linux's driver does.
func BenchmarkUnixHostToGuest(b *testing.B) {
	const rxBufs, port, creditEvery = 128, 1024, 256 << 10
	g, uds := newGuestRx(b, rxBufs)
	c, _, req := hostConnect(b, g, uds, port)
	g.irq.notify = make(chan struct{}, 1)
	g.data = nil // payloads are counted here, not kept
	total := int64(b.N) << 20
	b.SetBytes(1 << 20)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	werr := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, zeroReader{}, total)
		werr <- err
	}()
	var got, credited int64
	g.irq.mu.Lock()
	irqs0 := g.irq.n
	g.irq.mu.Unlock()
	for got < total {
		select {
		case <-g.irq.notify:
		case <-time.After(10 * time.Millisecond):
		}
		used := g.rx.TakeUsed()
		// Interrupt me after the next buffer (event index), as Linux's
		// driver asks when it re-enables callbacks.
		g.rx.SetUsedEvent(g.rx.UsedSeen())
		for _, u := range used {
			a := g.rxBufs[u.ID]
			delete(g.rxBufs, u.ID)
			var hb [HeaderSize]byte
			g.mem.ReadAt(hb[:], a)
			h, err := ParseHeader(hb[:])
			if err != nil || h.Op != OpRW || h.Len+HeaderSize != u.Len {
				b.Fatalf("packet %+v (%d bytes used): %v", h, u.Len, err)
			}
			got += int64(h.Len)
			head := g.rx.AddChain(vt.Buf{Addr: a, Len: rxBufSize, Write: true})
			g.rxBufs[uint32(head)] = a
		}
		if len(used) > 0 {
			g.kick(rxQueue)
		}
		if got-credited >= creditEvery {
			credited = got
			g.tx.TakeUsed()
			g.send(Header{SrcPort: port, DstPort: req.SrcPort, Op: OpCreditUpdate, BufAlloc: 1 << 20, FwdCnt: uint32(got)}, nil)
		}
	}
	b.StopTimer()
	// The process's CPU time (device loop, host writer and fake guest):
	// what the emulated lab charges for, where wall time here is bound by
	// the two host cores shared among the three.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/MiB")
	if err := <-werr; err != nil {
		b.Fatal(err)
	}
	g.irq.mu.Lock()
	b.ReportMetric(float64(g.irq.n-irqs0)/float64(b.N), "irqs/MiB")
	g.irq.mu.Unlock()
	g.noBroken()
}

func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
