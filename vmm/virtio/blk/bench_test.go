package blk

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// benchRig is a rig whose interrupt is an eventfd the benchmark blocks on,
// as a guest waits for its irqfd, plus one preallocated 4 KiB request.
type benchRig struct {
	*rig
	irqfd                   int
	used                    uint16 // completions seen
	hdrIn, hdrOut, data, st uint64
}

// newBenchRig's disk is a 1 MiB file in the test's temporary directory,
// or on tmpfs (/dev/shm) when inMemory is set.
func newBenchRig(b *testing.B, inMemory bool) *benchRig {
	b.Helper()
	cfg := Config{ID: "bench"}
	if inMemory {
		f, err := os.CreateTemp("/dev/shm", "blk-bench")
		if err != nil {
			b.Skip(err)
		}
		b.Cleanup(func() { os.Remove(f.Name()) })
		_, err = f.Write(make([]byte, 1<<20))
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		cfg.Path = f.Name()
	}
	r := newRig(b, cfg, make([]byte, 1<<20), 0)
	if inMemory {
		var mem bool
		r.dev.loop.Call(func() { mem = r.dev.be.inMemory })
		if !mem {
			b.Skip("/dev/shm is not tmpfs here")
		}
	}
	irqfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC) // blocking reads
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(irqfd) })
	r.irq.efd.Store(int32(irqfd))
	br := &benchRig{rig: r, irqfd: irqfd}
	br.hdrIn, br.hdrOut = r.header(TypeIn, 8), r.header(TypeOut, 16)
	br.data, br.st = r.drv.Alloc(4096, 4096), r.drv.Alloc(1, 1)
	return br
}

// post adds one request. Like Linux's virtqueue_enable_cb it first asks
// for an interrupt at the next completion (used_event = last seen).
func (r *benchRig) post(write bool) {
	r.drv.SetUsedEvent(r.used)
	if write {
		r.drv.AddChain(vt.Buf{Addr: r.hdrOut, Len: 16}, vt.Buf{Addr: r.data, Len: 4096}, vt.Buf{Addr: r.st, Len: 1, Write: true})
		return
	}
	r.drv.AddChain(vt.Buf{Addr: r.hdrIn, Len: 16}, vt.Buf{Addr: r.data, Len: 4096, Write: true}, vt.Buf{Addr: r.st, Len: 1, Write: true})
}

// complete checks that exactly one request completed with StatusOK.
func (r *benchRig) complete(b *testing.B) {
	if u := r.drv.TakeUsed(); len(u) != 1 {
		b.Fatalf("%d completions, want 1", len(u))
	}
	r.used++
	var s [1]byte
	if err := r.mem.ReadAt(s[:], r.st); err != nil || s[0] != StatusOK {
		b.Fatalf("status %d, %v", s[0], err)
	}
}

type benchMode struct {
	name                  string
	write, ring, inMemory bool
	ringOnly              bool // no page-cache attempt first: every read goes to the ring
}

// benchModes are the request kinds each benchmark runs, each through the
// disk's io_uring and synchronously, and with the file in memory (tmpfs:
// synchronous, raw system calls); reads also through the ring without
// the page-cache attempt first (how reads went before it).
func benchModes() []benchMode {
	var m []benchMode
	for _, where := range []string{"io_uring", "ring-only", "sync", "tmpfs"} {
		for _, write := range []bool{false, true} {
			if write && where == "ring-only" {
				continue // buffered writes never take the ring
			}
			name := map[bool]string{false: "read/", true: "write/"}[write] + where
			m = append(m, benchMode{name, write, where == "io_uring" || where == "ring-only", where == "tmpfs", where == "ring-only"})
		}
	}
	return m
}

// switches is the process's context switches so far, voluntary or not.
func switches(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Nvcsw + ru.Nivcsw
}

// BenchmarkRequestQD1 is the whole queue-depth-1 round trip the guest
// sees: post a 4 KiB request, kick the queue's eventfd, the event loop
// serves it (pread/pwrite of a file in the page cache) and raises the
// interrupt eventfd the "guest" is blocked on. switches/op counts the
// whole process's context switches.
func BenchmarkRequestQD1(b *testing.B) {
	for _, tc := range benchModes() {
		b.Run(tc.name, func(b *testing.B) {
			useRing, readCachedFirst = tc.ring, !tc.ringOnly
			b.Cleanup(func() { useRing, readCachedFirst = true, true })
			r := newBenchRig(b, tc.inMemory)
			one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
			var buf [8]byte
			b.ReportAllocs()
			b.ResetTimer()
			sw := switches(b)
			defer func() { b.ReportMetric(float64(switches(b)-sw)/float64(b.N), "switches/op") }()
			for range b.N {
				r.post(tc.write)
				if _, err := unix.Write(r.kick, one); err != nil {
					b.Fatal(err)
				}
				if _, err := unix.Read(r.irqfd, buf[:]); err != nil {
					b.Fatal(err)
				}
				r.complete(b)
			}
		})
	}
}

// BenchmarkProcess is the device's CPU cost per 4 KiB request without the
// thread hand-offs: the request is served by calling the queue processing
// directly (no kick is written, so the event loop never runs it
// concurrently).
// Only the synchronous path: with the ring a read the kernel does not
// finish inside the submitting call completes on the event loop, which
// would then race with this goroutine over the queue.
func BenchmarkProcess(b *testing.B) {
	for _, tc := range benchModes() {
		if tc.ring || tc.ringOnly {
			continue
		}
		b.Run(tc.name, func(b *testing.B) {
			useRing = false
			b.Cleanup(func() { useRing = true })
			r := newBenchRig(b, tc.inMemory)
			var buf [8]byte
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r.post(tc.write)
				r.dev.process()
				if _, err := unix.Read(r.irqfd, buf[:]); err != nil {
					b.Fatal(err)
				}
				r.complete(b)
			}
		})
	}
}
