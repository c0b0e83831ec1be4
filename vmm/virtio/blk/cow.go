package blk

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Copy-on-write disks: many VMs share one read-only base image (kept in
// the host's page cache), and each VM's disk is a sparse overlay file of
// the same size that holds only the clusters its guest wrote. Which
// clusters the overlay holds is kept in memory only, so the overlay must
// hold no data when it is opened. Requests run one at a time on the
// device's loop (no ring), so the cluster map needs no lock.

// clusterSize is the unit of copy-up; the page size, so that a buffered
// overlay write of one cluster is one page.
const clusterSize = 4096

// errOutOfRange is a request the layer refuses: past the end of the disk,
// or a length that does not match its buffers.
var errOutOfRange = errors.New("copy-on-write request out of range")

// cowLayer is the copy-on-write state of a backend.
type cowLayer struct {
	overlay  fileIO
	base     fileIO
	baseFile *os.File // owned; closed by close
	size     uint64
	present  []uint64 // bit per cluster: the overlay holds it
	cluster  []byte   // copy-up scratch
	pieces   [][]byte // reused by byteRange
}

func newCowLayer(overlay, base fileIO, size uint64) *cowLayer {
	clusters := (size + clusterSize - 1) / clusterSize
	return &cowLayer{
		overlay: overlay,
		base:    base,
		size:    size,
		present: make([]uint64, (clusters+63)/64),
		cluster: make([]byte, clusterSize),
	}
}

// openBacked opens cfg.Path read-write as an overlay of cfg.Backing,
// opened read-only.
func openBacked(cfg Config) (*backend, error) {
	if cfg.ReadOnly || cfg.Direct {
		return nil, fmt.Errorf("disk %q over %q: a backing image needs a writable, buffered disk (readonly=off, direct=off)",
			cfg.Path, cfg.Backing)
	}
	overlay, overlaySize, err := openRegular(cfg.Path, unix.O_RDWR, "disk")
	if err != nil {
		return nil, err
	}
	base, baseSize, err := openRegular(cfg.Backing, unix.O_RDONLY, "backing image")
	if err != nil {
		overlay.Close()
		return nil, err
	}
	fail := func(err error) (*backend, error) {
		overlay.Close()
		base.Close()
		return nil, err
	}
	if overlaySize != baseSize {
		return fail(fmt.Errorf("disk %q is %d bytes, its backing image %q is %d bytes: they must be the same size",
			cfg.Path, overlaySize, cfg.Backing, baseSize))
	}
	fd := int(overlay.Fd())
	if at, err := unix.Seek(fd, 0, unix.SEEK_DATA); err == nil {
		// Clusters written before are not known, so the base would show
		// through them.
		return fail(fmt.Errorf("disk %q holds data at offset %d: a copy-on-write overlay must be an empty sparse file "+
			"(or its file system does not report holes)", cfg.Path, at))
	} else if !errors.Is(err, unix.ENXIO) {
		return fail(fmt.Errorf("disk %q: look for data: %w", cfg.Path, err))
	}
	b := &backend{f: overlay, fd: fd, size: overlaySize, memAlign: SectorSize, offAlign: SectorSize, inMemory: inMemory(fd)}
	baseFd := int(base.Fd())
	b.cow = newCowLayer(fileIO{fd: fd, inMemory: b.inMemory}, fileIO{fd: baseFd, inMemory: inMemory(baseFd)}, b.size)
	b.cow.baseFile = base
	return b, nil
}

// openRegular opens the regular file path and returns its size; what
// names the file in errors.
func openRegular(path string, flag int, what string) (*os.File, uint64, error) {
	// O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
	f, err := os.OpenFile(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s %q: %w", what, path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat %s %q: %w", what, path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s %q is not a regular file", what, path)
	}
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s %q: %w", what, path, err)
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("size of %s %q: %w", what, path, err)
	}
	return f, uint64(end), nil
}

func (c *cowLayer) close() error {
	if c.baseFile == nil {
		return nil
	}
	err := c.baseFile.Close()
	c.baseFile = nil
	return err
}

func (c *cowLayer) has(cluster uint64) bool {
	return c.present[cluster/64]&(1<<(cluster%64)) != 0
}

// mark records that the overlay holds clusters first to last.
func (c *cowLayer) mark(first, last uint64) {
	for k := first; k <= last; k++ {
		c.present[k/64] |= 1 << (k % 64)
	}
}

// check validates a request of total bytes in bufs at off.
func (c *cowLayer) check(bufs [][]byte, off, total uint64) error {
	var n uint64
	for _, s := range bufs {
		n += uint64(len(s))
	}
	if n != total || off > c.size || total > c.size-off {
		return fmt.Errorf("%w: %d bytes (buffers hold %d) at %d on a disk of %d", errOutOfRange, total, n, off, c.size)
	}
	return nil
}

// runEnd returns where the run of clusters that starts at off and are in
// the overlay (or all not) ends, at most end.
func (c *cowLayer) runEnd(off, end uint64) uint64 {
	state := c.has(off / clusterSize)
	k := off/clusterSize + 1
	for k*clusterSize < end && c.has(k) == state {
		k++
	}
	return min(k*clusterSize, end)
}

// read fills bufs (total bytes) from off: each run of clusters from the
// overlay or the base.
func (c *cowLayer) read(bufs [][]byte, off, total uint64) error {
	if err := c.check(bufs, off, total); err != nil {
		return err
	}
	start, end := off, off+total
	for off < end {
		next := c.runEnd(off, end)
		src := c.base
		if c.has(off / clusterSize) {
			src = c.overlay
		}
		c.pieces = byteRange(c.pieces[:0], bufs, off-start, next-off)
		if err := src.rw(c.pieces, off, false); err != nil {
			return err
		}
		off = next
	}
	return nil
}

// write stores bufs (total bytes) at off in the overlay. A cluster the
// request covers whole, or one already in the overlay, is written as it
// is (consecutive ones in one call); a cluster partly written that is
// still in the base is copied up first.
func (c *cowLayer) write(bufs [][]byte, off, total uint64) error {
	if err := c.check(bufs, off, total); err != nil {
		return err
	}
	if total == 0 {
		return nil
	}
	start, end := off, off+total
	direct := off // start of the bytes not written yet, all direct
	for k := off / clusterSize; k*clusterSize < end; k++ {
		from, to := k*clusterSize, min((k+1)*clusterSize, c.size)
		lo, hi := max(from, start), min(to, end)
		if c.has(k) || lo == from && hi == to {
			continue
		}
		if err := c.writeDirect(bufs, start, direct, lo); err != nil {
			return err
		}
		if err := c.copyUp(bufs, start, k, lo, hi); err != nil {
			return err
		}
		direct = hi
	}
	return c.writeDirect(bufs, start, direct, end)
}

// writeDirect writes request bytes [from, to) (the request starts at
// start) to the overlay; their clusters are whole or in it already.
func (c *cowLayer) writeDirect(bufs [][]byte, start, from, to uint64) error {
	if from >= to {
		return nil
	}
	c.pieces = byteRange(c.pieces[:0], bufs, from-start, to-from)
	if err := c.overlay.rw(c.pieces, from, true); err != nil {
		return err
	}
	c.mark(from/clusterSize, (to-1)/clusterSize)
	return nil
}

// copyUp writes cluster k to the overlay: the base's bytes with request
// bytes [lo, hi) over them.
func (c *cowLayer) copyUp(bufs [][]byte, start, k, lo, hi uint64) error {
	from := k * clusterSize
	buf := c.cluster[:min(clusterSize, c.size-from)]
	if err := c.base.rw([][]byte{buf}, from, false); err != nil {
		return err
	}
	p := buf[lo-from : hi-from]
	for _, s := range byteRange(c.pieces[:0], bufs, lo-start, hi-lo) {
		p = p[copy(p, s):]
	}
	if err := c.overlay.rw([][]byte{buf}, from, true); err != nil {
		return err
	}
	c.mark(k, k)
	return nil
}

// zeroes is a cluster of zero bytes, only ever read.
var zeroes = make([]byte, clusterSize)

// zero makes [off, off+n) read as zeroes: a hole in the overlay for whole
// clusters (which are then the overlay's), writes for partial ones.
func (c *cowLayer) zero(off, n uint64) error {
	if off > c.size || n > c.size-off {
		return fmt.Errorf("%w: zero %d bytes at %d on a disk of %d", errOutOfRange, n, off, c.size)
	}
	end := off + n
	whole := (off + clusterSize - 1) / clusterSize * clusterSize
	wholeEnd := end / clusterSize * clusterSize
	if end == c.size {
		wholeEnd = end // the last cluster may be short
	}
	if whole >= wholeEnd {
		return c.writeZeroes(off, end)
	}
	if err := c.writeZeroes(off, whole); err != nil {
		return err
	}
	if err := unix.Fallocate(c.overlay.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE,
		int64(whole), int64(wholeEnd-whole)); err == nil {
		c.mark(whole/clusterSize, (wholeEnd-1)/clusterSize)
	} else if err := c.writeZeroes(whole, wholeEnd); err != nil {
		return err
	}
	return c.writeZeroes(wholeEnd, end)
}

// writeZeroes writes zeroes over [from, to) through write.
func (c *cowLayer) writeZeroes(from, to uint64) error {
	const perCall = 256 // iovecs of zeroes: 1 MiB
	var iov [perCall][]byte
	for from < to {
		n := min(to-from, perCall*clusterSize)
		bufs := iov[:0]
		for left := n; left > 0; left -= min(left, clusterSize) {
			bufs = append(bufs, zeroes[:min(left, clusterSize)])
		}
		if err := c.write(bufs, from, n); err != nil {
			return err
		}
		from += n
	}
	return nil
}

// byteRange appends to dst the parts of bufs that hold bytes [from,
// from+n) of their concatenation, without copying data, and returns it;
// bytes past the end of bufs are left out.
func byteRange(dst, bufs [][]byte, from, n uint64) [][]byte {
	for _, s := range bufs {
		if n == 0 {
			break
		}
		if from >= uint64(len(s)) {
			from -= uint64(len(s))
			continue
		}
		s = s[from:]
		from = 0
		k := min(n, uint64(len(s)))
		dst = append(dst, s[:k])
		n -= k
	}
	return dst
}
