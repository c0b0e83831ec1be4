package blk

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/internal/uring"
)

// backend is the host file or block device behind a disk.
type backend struct {
	f        *os.File
	fd       int
	size     uint64 // bytes
	direct   bool
	memAlign uint64 // O_DIRECT buffer alignment
	offAlign uint64 // O_DIRECT offset and length alignment
	blockDev bool
	discard  bool // fallocate(PUNCH_HOLE) works
	bounce   []byte
	ring     *uring.Ring // nil: synchronous I/O (aio.go)
	// nowaitRead: the file system reads cached pages without blocking
	// when asked (RWF_NOWAIT): a read the page cache holds is served at
	// once (readCached), and io_uring is worth having for the rest.
	nowaitRead bool
	// inMemory: the file lives in memory (tmpfs, ramfs; the shim's images
	// under /run), so no read, write or flush of it waits for a device.
	// Its I/O is made without the Go runtime's system-call bookkeeping
	// (rawsys), which would wake the runtime's sysmon thread on each
	// request; a file a device backs keeps ordinary calls, so that a hung
	// disk cannot stall the process's stop-the-world pauses.
	inMemory bool
	// cow, when set, makes f a copy-on-write overlay of a read-only base
	// image (cow.go); such a backend is buffered and synchronous.
	cow *cowLayer
}

// maxBounce is the largest bounce buffer kept between requests.
const maxBounce = 4 << 20

// openBackend opens cfg.Path (over cfg.Backing when set) with the access
// cfg asks for.
func openBackend(cfg Config) (*backend, error) {
	if cfg.Backing != "" {
		return openBacked(cfg)
	}
	path, readOnly, direct := cfg.Path, cfg.ReadOnly, cfg.Direct
	flag := unix.O_RDWR
	if readOnly {
		flag = unix.O_RDONLY
	}
	if direct {
		flag |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk %q: %w", path, err)
	}
	b := &backend{f: f, fd: int(f.Fd()), direct: direct, memAlign: 512, offAlign: 512}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat disk %q: %w", path, err)
	}
	b.blockDev = fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	if !fi.Mode().IsRegular() && !b.blockDev {
		f.Close()
		return nil, fmt.Errorf("disk %q is neither a regular file nor a block device", path)
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size of disk %q: %w", path, err)
	}
	b.size = uint64(end)
	b.inMemory = !b.blockDev && inMemory(b.fd)
	if direct {
		b.probeDirectAlign()
	} else {
		b.nowaitRead = probeNowaitRead(b.fd, b.size)
	}
	if !readOnly && !b.blockDev {
		// Punching a hole past the end with KEEP_SIZE changes nothing and
		// fails only where the file system cannot punch holes.
		err := unix.Fallocate(b.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(b.size), 4096)
		b.discard = err == nil
	}
	if b.blockDev {
		b.discard = !readOnly
	}
	return b, nil
}

// probeDirectAlign finds O_DIRECT's alignment needs: statx DIOALIGN
// (Linux 6.1+) or the block device's logical sector size.
func (b *backend) probeDirectAlign() {
	var st unix.Statx_t
	if err := unix.Statx(b.fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err == nil &&
		st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_offset_align != 0 {
		b.memAlign = max(uint64(st.Dio_mem_align), 1)
		b.offAlign = uint64(st.Dio_offset_align)
		return
	}
	if b.blockDev {
		if n, err := unix.IoctlGetInt(b.fd, unix.BLKSSZGET); err == nil && n >= 512 && n&(n-1) == 0 {
			b.memAlign, b.offAlign = uint64(n), uint64(n)
		}
	}
}

// probeNowaitRead reports whether fd's file system supports non-blocking
// buffered reads (FMODE_NOWAIT; tmpfs, for one, does not). An empty file
// is asked nothing.
func probeNowaitRead(fd int, size uint64) bool {
	if size == 0 {
		return false
	}
	var one [1]byte
	_, err := unix.Preadv2(fd, [][]byte{one[:]}, 0, unix.RWF_NOWAIT)
	return err == nil || errors.Is(err, unix.EAGAIN)
}

// inMemory reports whether fd's file system keeps its files in memory
// only (tmpfs, ramfs). A tmpfs page swapped out is read back from swap,
// but a host that waits on its swap device is stalled anyway.
func inMemory(fd int) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false
	}
	return st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC
}

// blockSize is the logical block size offered to the guest.
func (b *backend) blockSize() uint64 {
	if b.direct {
		return max(b.offAlign, SectorSize)
	}
	return SectorSize
}

func (b *backend) close() error {
	var baseErr error
	if b.cow != nil {
		baseErr = b.cow.close()
	}
	if b.bounce != nil {
		_ = unix.Munmap(b.bounce)
		b.bounce = nil
	}
	if b.ring != nil {
		_ = b.ring.Close()
		b.ring = nil
	}
	return errors.Join(b.f.Close(), baseErr)
}

// aligned reports whether bufs can go to an O_DIRECT file as they are.
func (b *backend) aligned(bufs [][]byte) bool {
	for _, s := range bufs {
		if uint64(len(s))%b.offAlign != 0 || addrOf(s)%b.memAlign != 0 {
			return false
		}
	}
	return true
}

// buffer returns an aligned scratch buffer of n bytes (mmap'd, so page
// aligned); release must be called when done.
func (b *backend) buffer(n uint64) ([]byte, func(), error) {
	if n <= maxBounce {
		if b.bounce == nil {
			m, err := unix.Mmap(-1, 0, maxBounce, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				return nil, nil, fmt.Errorf("bounce buffer: %w", err)
			}
			b.bounce = m
		}
		return b.bounce[:n], func() {}, nil
	}
	m, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, fmt.Errorf("bounce buffer: %w", err)
	}
	return m, func() { _ = unix.Munmap(m) }, nil
}

// readCached fills bufs with the total bytes at off if the page cache
// holds them all, and reports whether it did. It never waits for the
// device (RWF_NOWAIT), so it is a raw call (rawsys): no sysmon wake-up,
// and none of the ring's submit, eventfd and reap round (a cached 4 KiB
// read through the ring took 17–20 µs on ext4 against 11–12 with a
// plain preadv; docs/performance.md, eighteenth session). A read it
// cannot finish may have filled part of bufs; the caller reads it all
// again, on the ring or synchronously.
func (b *backend) readCached(bufs [][]byte, off, total uint64) bool {
	if !b.nowaitRead || !readCachedFirst || len(bufs) > iovMax {
		return false
	}
	n, err := preadvNowait(b.fd, bufs, int64(off))
	return err == nil && uint64(n) == total
}

// preadvNowait is the non-blocking read readCached makes. Whether the
// kernel serves pages it had to read in depends on the storage (fast
// devices finish the read-ahead inside the call), so tests put a read
// that fails part way in its place to take the ring path for certain.
var preadvNowait = rawsys.PreadvNowait

// readAt fills bufs from offset off; bytes past the end of the file read
// as zero.
func (b *backend) readAt(bufs [][]byte, off uint64, total uint64) error {
	if b.cow != nil {
		return b.cow.read(bufs, off, total)
	}
	if !b.direct || b.aligned(bufs) {
		return b.rw(bufs, off, false)
	}
	tmp, release, err := b.buffer(total)
	if err != nil {
		return err
	}
	defer release()
	if err := b.rw([][]byte{tmp}, off, false); err != nil {
		return err
	}
	for _, s := range bufs {
		tmp = tmp[copy(s, tmp):]
	}
	return nil
}

// writeAt writes bufs at offset off.
func (b *backend) writeAt(bufs [][]byte, off uint64, total uint64) error {
	if b.cow != nil {
		return b.cow.write(bufs, off, total)
	}
	if !b.direct || b.aligned(bufs) {
		return b.rw(bufs, off, true)
	}
	tmp, release, err := b.buffer(total)
	if err != nil {
		return err
	}
	defer release()
	p := tmp
	for _, s := range bufs {
		p = p[copy(p, s):]
	}
	return b.rw([][]byte{tmp}, off, true)
}

// iovMax bounds the buffers per preadv/pwritev call (UIO_MAXIOV).
const iovMax = 1024

// rw transfers all of bufs at off, retrying short transfers. A read that
// reaches end of file zero-fills the rest.
func (b *backend) rw(bufs [][]byte, off uint64, write bool) error {
	return fileIO{fd: b.fd, inMemory: b.inMemory}.rw(bufs, off, write)
}

// fileIO is a descriptor and how to call it: raw calls (rawsys) for a
// file in memory (see backend.inMemory).
type fileIO struct {
	fd       int
	inMemory bool
}

// rw is backend.rw on f.
func (f fileIO) rw(bufs [][]byte, off uint64, write bool) error {
	for len(bufs) > 0 {
		batch := bufs[:min(len(bufs), iovMax)]
		var n int
		var err error
		switch {
		case write && f.inMemory:
			n, err = rawsys.Pwritev(f.fd, batch, int64(off))
		case f.inMemory:
			n, err = rawsys.Preadv(f.fd, batch, int64(off))
		case write:
			n, err = unix.Pwritev(f.fd, batch, int64(off))
		default:
			n, err = unix.Preadv(f.fd, batch, int64(off))
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if write {
				return io.ErrShortWrite
			}
			for _, s := range bufs {
				clear(s)
			}
			return nil
		}
		off += uint64(n)
		bufs = skip(bufs, uint64(n))
	}
	return nil
}

// skip returns bufs without their first n bytes (and without empty
// buffers); it copies only when it has to cut into a buffer.
func skip(bufs [][]byte, n uint64) [][]byte {
	for len(bufs) > 0 && n >= uint64(len(bufs[0])) {
		n -= uint64(len(bufs[0]))
		bufs = bufs[1:]
	}
	if n > 0 && len(bufs) > 0 {
		bufs = append([][]byte{bufs[0][n:]}, bufs[1:]...)
	}
	return bufs
}

// flush syncs the file (a copy-on-write backend's overlay; its base is
// read-only).
func (b *backend) flush() error {
	if b.inMemory {
		return rawsys.Fdatasync(b.fd)
	}
	return unix.Fdatasync(b.fd)
}

// discardRange deallocates [off, off+n); it reads back as zeroes. Discard
// is advisory, so a backend that cannot do it still succeeds.
func (b *backend) discardRange(off, n uint64) error {
	if !b.discard {
		return nil
	}
	err := unix.Fallocate(b.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n))
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
		return nil
	}
	return err
}

// zeroRange makes [off, off+n) read as zeroes: fallocate where the backend
// supports it, else by writing zeroes.
func (b *backend) zeroRange(off, n uint64, unmap bool) error {
	if b.cow != nil {
		// A hole in the overlay alone would read the base again.
		return b.cow.zero(off, n)
	}
	modes := []uint32{unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE}
	if unmap {
		modes = append([]uint32{unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE}, modes...)
	}
	for _, m := range modes {
		if err := unix.Fallocate(b.fd, m, int64(off), int64(n)); err == nil {
			return nil
		}
	}
	const chunk = 1 << 20
	buf, release, err := b.buffer(min(n, chunk))
	if err != nil {
		return err
	}
	defer release()
	clear(buf)
	for n > 0 {
		k := min(n, uint64(len(buf)))
		if err := b.rw([][]byte{buf[:k]}, off, true); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}
