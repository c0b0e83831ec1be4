package blk

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/internal/uring"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// ioModes runs f with the disk's io_uring ring and with synchronous I/O.
func ioModes(t *testing.T, f func(t *testing.T)) {
	for _, ring := range []bool{true, false} {
		name := "sync"
		if ring {
			name = "io_uring"
		}
		t.Run(name, func(t *testing.T) {
			old := useRing
			useRing = ring
			t.Cleanup(func() { useRing = old })
			f(t)
		})
	}
}

// wantRing fails a ring-mode test whose device fell back to synchronous
// I/O, and skips where the kernel has no usable io_uring.
func wantRing(t *testing.T, b *Block) {
	t.Helper()
	if !useRing {
		return
	}
	var has, noRing bool
	b.loop.Call(func() {
		has = b.be != nil && b.be.ring != nil
		noRing = b.be != nil && (b.be.inMemory || !b.be.direct && !b.be.nowaitRead)
	})
	if has {
		return
	}
	if noRing {
		t.Skip("a disk in memory, or a buffered disk on a file system without non-blocking reads, gets no ring")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	ring, err := uring.New(QueueSize, int(f.Fd()), efd)
	if err != nil {
		t.Skipf("no io_uring: %v", err)
	}
	ring.Close()
	t.Fatal("the device serves its disk synchronously although io_uring works here")
}

// queueReqs posts n 4 KiB requests of typ at sectors 0, 8, 16, ... and
// returns their data and status addresses.
func queueReqs(r *rig, typ uint32, n int, fill func(i int) []byte) (data, status []uint64) {
	for i := range n {
		d, st := r.drv.Alloc(4096, 4096), r.drv.Alloc(1, 1)
		if fill != nil {
			r.mem.WriteAt(fill(i), d)
		}
		r.mem.WriteAt([]byte{0xff}, st)
		r.drv.AddChain(vt.Buf{Addr: r.header(typ, uint64(i)*8), Len: 16},
			vt.Buf{Addr: d, Len: 4096, Write: typ == TypeIn}, vt.Buf{Addr: st, Len: 1, Write: true})
		data, status = append(data, d), append(status, st)
	}
	return data, status
}

func (r *rig) status(st uint64) byte {
	var s [1]byte
	r.mem.ReadAt(s[:], st)
	return s[0]
}

// TestQueueDepth posts 64 writes, then 64 reads of them, each batch in one
// kick, buffered and (where the file system has it) O_DIRECT.
func TestQueueDepth(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(map[bool]string{false: "buffered", true: "direct"}[direct], func(t *testing.T) {
			ioModes(t, func(t *testing.T) {
				const n = 64 // 3 descriptors each: 192 of the queue's 256
				path := filepath.Join(t.TempDir(), "disk.img")
				if d := os.Getenv("BLK_TEST_DIRECT_DIR"); direct && d != "" {
					path = filepath.Join(d, "qd.img")
					t.Cleanup(func() { os.Remove(path) })
				}
				if err := os.WriteFile(path, make([]byte, n*4096), 0o644); err != nil {
					t.Fatal(err)
				}
				r := newRig(t, Config{ID: "d", Path: path, Direct: direct}, nil, 0)
				wantRing(t, r.dev)
				block := func(i int) []byte { return pattern(4096, byte(i+1)) }
				_, wst := queueReqs(r, TypeOut, n, block)
				r.wait(n)
				for i, st := range wst {
					if s := r.status(st); s != StatusOK {
						t.Fatalf("write %d: status %d", i, s)
					}
				}
				data, rst := queueReqs(r, TypeIn, n, nil)
				used := r.wait(n)
				buf := make([]byte, 4096)
				for i := range n {
					if s := r.status(rst[i]); s != StatusOK {
						t.Fatalf("read %d: status %d", i, s)
					}
					r.mem.ReadAt(buf, data[i])
					if !bytes.Equal(buf, block(i)) {
						t.Fatalf("read %d: data differs", i)
					}
				}
				for _, u := range used {
					if u.Len != 4097 {
						t.Fatalf("read used len %d, want 4097", u.Len)
					}
				}
			})
		})
	}
}

// TestTruncatedDisk: a file cut short under the device reads zeroes past
// its new end, as the synchronous path always did.
func TestTruncatedDisk(t *testing.T) {
	ioModes(t, func(t *testing.T) {
		disk := pattern(64<<10, 3)
		r := newRig(t, Config{ID: "d"}, disk, 0)
		wantRing(t, r.dev)
		if err := os.Truncate(r.path, 34<<10); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4096)
		st, u := r.request(TypeIn, 64, got, 4096, false) // bytes 32–36 KiB
		if st != StatusOK || u.Len != 4097 {
			t.Fatalf("status %d used %d", st, u.Len)
		}
		want := append(append([]byte{}, disk[32<<10:34<<10]...), make([]byte, 2048)...)
		if !bytes.Equal(got, want) {
			t.Fatal("read across the new end: want the data, then zeroes")
		}
	})
}

// inflight pops and queues every posted request on the ring without
// submitting, so that they are certainly in flight for what comes next.
func inflight(t *testing.T, r *rig, n int) {
	t.Helper()
	b := r.dev
	readCachedFirst = false
	defer func() { readCachedFirst = true }()
	b.loop.Call(func() {
		for {
			ok, err := b.q.Pop(&b.chain)
			if err != nil || !ok {
				break
			}
			if _, done := b.handle(&b.chain); done {
				t.Error("a read was served synchronously")
			}
		}
		if got := b.be.ring.Inflight(); got != n {
			t.Errorf("%d in flight, want %d", got, n)
		}
	})
}

// TestResetInFlight: a reset waits for the requests in flight and drops
// their completions (the queue is gone); the slots come back.
func TestResetInFlight(t *testing.T) {
	func() {
		r := newRig(t, Config{ID: "d"}, pattern(64<<10, 4), 0)
		wantRing(t, r.dev)
		queueReqs(r, TypeIn, 8, nil)
		inflight(t, r, 8)
		r.dev.Reset()
		if used := r.drv.TakeUsed(); len(used) != 0 {
			t.Errorf("%d completions published after the reset", len(used))
		}
		if n := r.dev.be.ring.Inflight(); n != 0 {
			t.Errorf("%d requests in flight after the reset", n)
		}
		if len(r.dev.free) != QueueSize {
			t.Errorf("%d free request slots, want %d", len(r.dev.free), QueueSize)
		}
	}()
}

// TestUnplugInFlight: unplugging lets the requests in flight on the old
// file complete to the guest first.
func TestUnplugInFlight(t *testing.T) {
	func() {
		r := newSlotRig(t)
		disk := pattern(64<<10, 5)
		if err := r.dev.Plug(Config{ID: "d", Path: writeDisk(t, disk)}); err != nil {
			t.Fatal(err)
		}
		wantRing(t, r.dev)
		data, st := queueReqs(r.rig, TypeIn, 8, nil)
		inflight(t, r.rig, 8)
		if err := r.dev.Unplug("slot0"); err != nil {
			t.Fatal(err)
		}
		if used := r.drv.TakeUsed(); len(used) != 8 {
			t.Fatalf("%d of 8 completions published by the unplug", len(used))
		}
		buf := make([]byte, 4096)
		for i := range 8 {
			r.mem.ReadAt(buf, data[i])
			if s := r.status(st[i]); s != StatusOK || !bytes.Equal(buf, disk[i*4096:(i+1)*4096]) {
				t.Fatalf("read %d: status %d, data equal %v", i, s, bytes.Equal(buf, disk[i*4096:(i+1)*4096]))
			}
		}
	}()
}

// TestRingPolicy: which requests go through the ring. Buffered writes and
// buffered reads on a file system without non-blocking reads would only
// be handed to the kernel's worker threads, so they stay synchronous.
func TestRingPolicy(t *testing.T) {
	for _, tc := range []struct {
		name       string
		direct     bool
		nowaitRead bool
		uncached   bool // the non-blocking read cannot serve it (failNowait)
		typ        uint32
		queued     bool
	}{
		{"buffered read, non-blocking reads, cached", false, true, false, TypeIn, false},
		{"buffered read, non-blocking reads, not cached", false, true, true, TypeIn, true},
		{"buffered read, no non-blocking reads", false, false, false, TypeIn, false},
		{"buffered write", false, true, false, TypeOut, false},
		{"buffered flush", false, false, false, TypeFlush, true},
		{"direct read", true, false, false, TypeIn, true},
		{"direct write", true, false, false, TypeOut, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Config{ID: "d", Path: writeDisk(t, make([]byte, 64<<10)), Direct: tc.direct}, nil, 0)
			wantRing(t, r.dev)
			b := r.dev
			b.loop.Call(func() { b.be.nowaitRead = tc.nowaitRead })
			if tc.uncached {
				failNowait(t)
			}
			st := r.drv.Alloc(1, 1)
			bufs := []vt.Buf{{Addr: r.header(tc.typ, 0), Len: 16}}
			if tc.typ != TypeFlush {
				bufs = append(bufs, vt.Buf{Addr: r.drv.Alloc(4096, 4096), Len: 4096, Write: tc.typ == TypeIn})
			}
			r.drv.AddChain(append(bufs, vt.Buf{Addr: st, Len: 1, Write: true})...)
			var queued bool
			b.loop.Call(func() {
				if ok, err := b.q.Pop(&b.chain); !ok || err != nil {
					t.Errorf("pop: %v %v", ok, err)
					return
				}
				written, done := b.handle(&b.chain)
				queued = !done
				if done {
					if err := b.q.Push(b.chain.Head, written); err != nil {
						t.Error(err)
					}
				}
				b.submit()
				b.signal()
			})
			if queued != tc.queued {
				t.Errorf("queued on the ring: %v, want %v", queued, tc.queued)
			}
			if s := r.wait(1); len(s) != 1 || r.status(st) != StatusOK {
				t.Errorf("completion %v, status %d", s, r.status(st))
			}
		})
	}
}

// failNowait makes every non-blocking read fail as one of pages not
// cached does, after scribbling over its first buffer, until the test
// ends or the returned function is called. Dropping the pages instead
// does not do it for certain: the kernel reads them ahead within the call
// and serves them where the storage is fast.
func failNowait(t *testing.T) (restore func()) {
	preadvNowait = func(_ int, bufs [][]byte, _ int64) (int, error) {
		for i := range bufs[0] {
			bufs[0][i] = 0xaa
		}
		return 0, unix.EAGAIN
	}
	restore = func() { preadvNowait = rawsys.PreadvNowait }
	t.Cleanup(restore)
	return restore
}

// dropCache writes fd's file back and drops its pages from the page
// cache, so that the next read of it waits for the disk.
func dropCache(t *testing.T, fd int) {
	t.Helper()
	if err := unix.Fsync(fd); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	// Asked with mincore: a non-blocking read of a page not cached would
	// start reading it ahead.
	m, err := unix.Mmap(fd, 0, 64<<10, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, len(m)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal("mincore:", e)
	}
	for i, v := range vec {
		if v&1 != 0 {
			t.Skipf("page %d of the file is still cached after FADV_DONTNEED", i)
		}
	}
}

// TestReadCached: a buffered read the page cache holds is served at once
// without the ring (used length and data as the guest expects), one the
// non-blocking read cannot finish goes to the ring, and a read across the
// end of the file (a short non-blocking read) still reads zeroes past it.
func TestReadCached(t *testing.T) {
	disk := pattern(64<<10, 6)
	r := newRig(t, Config{ID: "d"}, disk, 0)
	wantRing(t, r.dev)
	b := r.dev
	serve := func() (done bool) {
		b.loop.Call(func() {
			if ok, err := b.q.Pop(&b.chain); !ok || err != nil {
				t.Errorf("pop: %v %v", ok, err)
				return
			}
			var written uint32
			if written, done = b.handle(&b.chain); done {
				if err := b.q.Push(b.chain.Head, written); err != nil {
					t.Error(err)
				}
			}
			b.submit()
			b.signal()
		})
		return done
	}
	read := func(sector uint64) (data, st uint64) {
		data, st = r.drv.Alloc(8192, 4096), r.drv.Alloc(1, 1)
		r.mem.WriteAt([]byte{0xff}, st)
		r.drv.AddChain(vt.Buf{Addr: r.header(TypeIn, sector), Len: 16},
			vt.Buf{Addr: data, Len: 4096, Write: true}, vt.Buf{Addr: data + 4096, Len: 4096, Write: true},
			vt.Buf{Addr: st, Len: 1, Write: true})
		return data, st
	}
	check := func(name string, data, st uint64, want []byte) {
		t.Helper()
		used := r.wait(1)
		got := make([]byte, len(want))
		r.mem.ReadAt(got, data)
		if len(used) != 1 || used[0].Len != uint32(len(want))+1 || r.status(st) != StatusOK || !bytes.Equal(got, want) {
			t.Errorf("%s: used %v, status %d, data equal %v", name, used, r.status(st), bytes.Equal(got, want))
		}
	}

	data, st := read(16)
	if !serve() {
		t.Error("a cached read was queued on the ring")
	}
	check("cached read", data, st, disk[8<<10:16<<10])

	// Pages not cached: the kernel starts reading them ahead and answers
	// EAGAIN unless the device finished within the call, which fast
	// storage does (CI's did); either way the data must be right.
	dropCache(t, b.be.fd)
	data, st = read(32)
	if serve() {
		t.Log("the kernel served pages not cached within the non-blocking read")
	}
	check("uncached read", data, st, disk[16<<10:24<<10])

	// A non-blocking read that fails after filling part of the buffers
	// goes to the ring, which reads it all again.
	restore := failNowait(t)
	data, st = read(48)
	if serve() {
		t.Error("a read the page cache could not serve was not put on the ring")
	}
	check("read the cache could not serve", data, st, disk[24<<10:32<<10])
	restore()

	if err := os.Truncate(r.path, 61<<10); err != nil {
		t.Fatal(err)
	}
	data, st = read(112) // bytes 56–64 KiB: 5 KiB of data, then zeroes
	serve()
	check("read across the end", data, st, append(append([]byte{}, disk[56<<10:61<<10]...), make([]byte, 3<<10)...))
}

// TestNowaitProbe: the probe matches what the file system answers a
// non-blocking read, and an empty file is not asked.
func TestNowaitProbe(t *testing.T) {
	if probeNowaitRead(-1, 0) {
		t.Error("an empty file probed as non-blocking")
	}
	dirs := []string{t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dirs = append(dirs, "/dev/shm")
	}
	for _, dir := range dirs {
		f, err := os.CreateTemp(dir, "probe")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		f.Write(make([]byte, 4096))
		var one [1]byte
		_, err = unix.Preadv2(int(f.Fd()), [][]byte{one[:]}, 0, unix.RWF_NOWAIT)
		want := !errors.Is(err, unix.EOPNOTSUPP)
		if got := probeNowaitRead(int(f.Fd()), 4096); got != want {
			t.Errorf("%s: probe %v, want %v (preadv2 RWF_NOWAIT: %v)", dir, got, want, err)
		}
		t.Logf("%s: non-blocking reads %v", dir, want)
	}
}

// TestInMemory: a disk on tmpfs is found to be in memory and gets no
// ring, buffered or direct; its reads, writes and flushes (made with raw
// system calls) reach the file. A disk elsewhere is in memory only where
// its file system is tmpfs or ramfs.
func TestInMemory(t *testing.T) {
	if inMemory(-1) {
		t.Error("a closed descriptor is in memory")
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if inMemory(efd) {
		t.Error("an eventfd is in memory")
	}
	if tmp := writeDisk(t, make([]byte, 4096)); tmpfs(t, tmp) != isInMemory(t, tmp) {
		t.Errorf("%s: in memory %v, but stat -f says tmpfs %v", tmp, isInMemory(t, tmp), tmpfs(t, tmp))
	}
	for _, direct := range []bool{false, true} {
		f, err := os.CreateTemp("/dev/shm", "blk-mem")
		if err != nil {
			t.Skip(err)
		}
		defer os.Remove(f.Name())
		f.Write(make([]byte, 64<<10))
		f.Close()
		if !tmpfs(t, f.Name()) {
			t.Skip("/dev/shm is not tmpfs here")
		}
		r := newRig(t, Config{ID: "d", Path: f.Name(), Direct: direct}, nil, 0)
		var mem, ring bool
		r.dev.loop.Call(func() { mem, ring = r.dev.be.inMemory, r.dev.be.ring != nil })
		if !mem || ring {
			t.Errorf("direct=%v: in memory %v, ring %v; want true, false", direct, mem, ring)
		}
		data := bytes.Repeat([]byte("memdisk!"), 1024)
		if st, _ := r.request(TypeOut, 8, data, len(data), false); st != StatusOK {
			t.Fatalf("direct=%v: write: status %d", direct, st)
		}
		if st, _ := r.request(TypeFlush, 0, nil, 1, false); st != StatusOK {
			t.Fatalf("direct=%v: flush: status %d", direct, st)
		}
		got := make([]byte, len(data))
		if st, _ := r.request(TypeIn, 8, got, len(data), false); st != StatusOK || !bytes.Equal(got, data) {
			t.Fatalf("direct=%v: read back: status %d, equal %v", direct, st, bytes.Equal(got, data))
		}
		disk, err := os.ReadFile(f.Name())
		if err != nil || !bytes.Equal(disk[8*SectorSize:8*SectorSize+len(data)], data) {
			t.Fatalf("direct=%v: file after the write: %v", direct, err)
		}
	}
}

// tmpfs reports what the mount table says of path's file system.
func tmpfs(t *testing.T, path string) bool {
	t.Helper()
	out, err := exec.Command("stat", "-f", "-c", "%T", path).Output()
	if err != nil {
		t.Skipf("stat -f %s: %v", path, err)
	}
	fs := strings.TrimSpace(string(out))
	return fs == "tmpfs" || fs == "ramfs"
}

func isInMemory(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return inMemory(int(f.Fd()))
}

// TestSkip: the short-transfer step rw and finishSync share.
func TestSkip(t *testing.T) {
	a, b, c := []byte("abcd"), []byte{}, []byte("ef")
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "abcd|ef"}, {2, "cd|ef"}, {4, "ef"}, {5, "f"}, {6, ""}, {9, ""}} {
		var got []string
		for _, s := range skip([][]byte{a, b, c}, tc.n) {
			if len(s) > 0 {
				got = append(got, string(s))
			}
		}
		if g := strings.Join(got, "|"); g != tc.want {
			t.Errorf("skip %d: %q, want %q", tc.n, g, tc.want)
		}
	}
	if string(a) != "abcd" {
		t.Error("skip changed its input")
	}
}
