package blk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/seccomp"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

const cs = clusterSize

// cowDisk is a backed backend over files in a temporary directory.
type cowDisk struct {
	be      *backend
	base    string
	overlay string
	orig    []byte // the base's bytes
}

func newCowDisk(t testing.TB, base []byte) *cowDisk {
	t.Helper()
	dir := t.TempDir()
	d := &cowDisk{base: filepath.Join(dir, "base.img"), overlay: filepath.Join(dir, "overlay.img"), orig: base}
	if err := os.WriteFile(d.base, base, 0o644); err != nil {
		t.Fatal(err)
	}
	sparseOverlay(t, d.overlay, int64(len(base)))
	be, err := openBackend(Config{Path: d.overlay, Backing: d.base})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.close() })
	d.be = be
	return d
}

func sparseOverlay(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// split cuts data into buffers of seg bytes (0: one buffer).
func split(data []byte, seg int) [][]byte {
	if seg <= 0 || seg >= len(data) {
		if len(data) == 0 {
			return nil
		}
		return [][]byte{data}
	}
	var bufs [][]byte
	for len(data) > 0 {
		n := min(seg, len(data))
		bufs = append(bufs, data[:n])
		data = data[n:]
	}
	return bufs
}

// check compares the whole disk with want, the base file with its
// original bytes, and the overlay's data with the clusters it holds.
func (d *cowDisk) check(t *testing.T, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if err := d.be.readAt(split(got, 0), 0, uint64(len(got))); err != nil {
		t.Fatalf("read the whole disk: %v", err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("disk differs from the model at byte %d (cluster %d): %#x, want %#x", i, i/cs, got[i], want[i])
	}
	if b, err := os.ReadFile(d.base); err != nil || !bytes.Equal(b, d.orig) {
		t.Fatalf("the base image changed (err %v)", err)
	}
	if fi, err := os.Stat(d.overlay); err != nil || fi.Size() != int64(len(want)) {
		t.Fatalf("overlay size changed: %v, %v", fi.Size(), err)
	}
	for _, e := range dataExtents(t, d.overlay) {
		for k := e[0] / cs; k*cs < e[1]; k++ {
			if !d.be.cow.has(uint64(k)) {
				t.Fatalf("overlay holds data in cluster %d, which the guest never wrote (extent %v)", k, e)
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// dataExtents lists the byte ranges of path that hold data
// (SEEK_DATA/SEEK_HOLE).
func dataExtents(t *testing.T, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	var out [][2]int64
	for off := int64(0); ; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return out
		}
		if err != nil {
			t.Fatalf("SEEK_DATA: %v", err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE: %v", err)
		}
		out = append(out, [2]int64{start, end})
		off = end
	}
}

func (c *cowLayer) clusters() []uint64 {
	var ks []uint64
	for i, w := range c.present {
		for w != 0 {
			b := uint64(bits.TrailingZeros64(w))
			ks = append(ks, uint64(i)*64+b)
			w &^= 1 << b
		}
	}
	return ks
}

type cowOp struct {
	write bool
	off   uint64
	n     uint64
	seg   int // buffer size the request is split into; 0: one buffer
}

func TestCowLayer(t *testing.T) {
	r := func(off, n uint64) cowOp { return cowOp{off: off, n: n} }
	w := func(off, n uint64) cowOp { return cowOp{write: true, off: off, n: n} }
	segs := func(op cowOp, seg int) cowOp { op.seg = seg; return op }
	tests := []struct {
		name string
		size uint64
		ops  []cowOp
		want []uint64 // clusters in the overlay afterwards
	}{
		{"untouched overlay reads the base", 4 * cs, []cowOp{r(0, 4*cs), r(512, 1024), r(3*cs, cs)}, nil},
		{"512 bytes in the middle of a cluster", 4 * cs, []cowOp{w(cs+1536, 512), r(cs, cs)}, []uint64{1}},
		{"partial head and tail across clusters", 6 * cs, []cowOp{w(cs+1024, 3*cs), r(0, 6*cs)}, []uint64{1, 2, 3, 4}},
		{"whole clusters", 4 * cs, []cowOp{w(cs, 2*cs), r(0, 4*cs)}, []uint64{1, 2}},
		{"read across written and unwritten clusters", 8 * cs,
			[]cowOp{w(2*cs, cs), w(5*cs+512, 512), r(cs+512, 6*cs), r(2*cs-512, 1024)}, []uint64{2, 5}},
		{"rewrite of a copied-up cluster", 4 * cs, []cowOp{w(512, 512), w(1024, 1024), w(0, 512), r(0, cs)}, []uint64{0}},
		{"partial last cluster: a sector in it", 3*cs + 1536, []cowOp{w(3*cs+512, 512), r(2*cs, cs+1536)}, []uint64{3}},
		{"partial last cluster: written whole", 3*cs + 1536, []cowOp{w(3*cs, 1536), r(3*cs, 1536)}, []uint64{3}},
		{"partial last cluster: from the cluster before", 3*cs + 1536, []cowOp{w(2*cs+3584, 1024)}, []uint64{2, 3}},
		{"disk smaller than a cluster", 1536, []cowOp{w(512, 512), r(0, 1536)}, []uint64{0}},
		{"512-byte segments", 4 * cs, []cowOp{segs(w(1024, 2*cs), 512), segs(r(0, 4*cs), 1536)}, []uint64{0, 1, 2}},
		{"odd-sized segments", 4 * cs, []cowOp{segs(w(512, 3*cs), 700), segs(r(100, 4*cs-200), 333)}, []uint64{0, 1, 2, 3}},
		{"unaligned bytes", 3 * cs, []cowOp{w(100, 5000), r(99, 7000), w(cs-1, 2)}, []uint64{0, 1}},
		{"empty requests", 2 * cs, []cowOp{w(cs+512, 0), r(cs, 0), w(2*cs, 0)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := pattern(int(tc.size), 0x5a)
			d := newCowDisk(t, base)
			model := slices.Clone(base)
			for i, op := range tc.ops {
				if op.write {
					data := pattern(int(op.n), byte(0x80+i))
					if err := d.be.writeAt(split(data, op.seg), op.off, op.n); err != nil {
						t.Fatalf("op %d: write %d at %d: %v", i, op.n, op.off, err)
					}
					copy(model[op.off:], data)
					continue
				}
				got := make([]byte, op.n)
				if err := d.be.readAt(split(got, op.seg), op.off, op.n); err != nil {
					t.Fatalf("op %d: read %d at %d: %v", i, op.n, op.off, err)
				}
				if j := firstDiff(got, model[op.off:op.off+op.n]); j >= 0 {
					t.Fatalf("op %d: read %d at %d differs at byte %d", i, op.n, op.off, op.off+uint64(j))
				}
			}
			d.check(t, model)
			if got := d.be.cow.clusters(); !slices.Equal(got, tc.want) {
				t.Errorf("overlay clusters %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCowZero(t *testing.T) {
	const size = 8*cs + 1536
	tests := []struct {
		name   string
		writes [][2]uint64 // written before
		off, n uint64
		holes  []uint64 // clusters that must be holes in the overlay afterwards
	}{
		{"whole clusters", nil, cs, 2 * cs, []uint64{1, 2}},
		{"partial head and tail", nil, cs + 512, 3 * cs, []uint64{2, 3}},
		{"inside one cluster", nil, cs + 512, 1024, nil},
		{"to the end, short last cluster", nil, 7 * cs, cs + 1536, []uint64{7, 8}},
		{"the short last cluster alone", nil, 8 * cs, 1536, []uint64{8}},
		{"over written clusters", [][2]uint64{{cs, 3 * cs}, {5*cs + 512, 512}}, cs + 1024, 5 * cs, []uint64{2, 3, 4, 5}},
		{"nothing", nil, cs, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := pattern(size, 0x33)
			d := newCowDisk(t, base)
			model := slices.Clone(base)
			for i, wr := range tc.writes {
				data := pattern(int(wr[1]), byte(i+1))
				if err := d.be.writeAt(split(data, 0), wr[0], wr[1]); err != nil {
					t.Fatal(err)
				}
				copy(model[wr[0]:], data)
			}
			if err := d.be.zeroRange(tc.off, tc.n, true); err != nil {
				t.Fatalf("zero %d at %d: %v", tc.n, tc.off, err)
			}
			clear(model[tc.off : tc.off+tc.n])
			d.check(t, model)
			ext := dataExtents(t, d.overlay)
			for _, k := range tc.holes {
				for _, e := range ext {
					if int64(k*cs) < e[1] && e[0] < int64((k+1)*cs) {
						t.Errorf("cluster %d holds data after write-zeroes (extent %v), want a hole", k, e)
					}
				}
			}
		})
	}
}

// TestCowModel runs random requests against a reference copy of the disk.
func TestCowModel(t *testing.T) {
	const size = 64*cs + 1536
	rng := rand.New(rand.NewSource(1))
	base := pattern(size, 0x17)
	d := newCowDisk(t, base)
	model := slices.Clone(base)
	sectors := uint64(size / SectorSize)
	for i := range 3000 {
		sector := uint64(rng.Int63n(int64(sectors)))
		n := uint64(1+rng.Intn(int(min(64, sectors-sector)))) * SectorSize
		off := sector * SectorSize
		seg := []int{0, 512, 1024, 4096, 1536}[rng.Intn(5)]
		switch rng.Intn(8) {
		case 0:
			if err := d.be.zeroRange(off, n, rng.Intn(2) == 0); err != nil {
				t.Fatalf("op %d: zero %d at %d: %v", i, n, off, err)
			}
			clear(model[off : off+n])
		case 1, 2, 3:
			data := make([]byte, n)
			rng.Read(data)
			if err := d.be.writeAt(split(data, seg), off, n); err != nil {
				t.Fatalf("op %d: write %d at %d: %v", i, n, off, err)
			}
			copy(model[off:], data)
		default:
			got := make([]byte, n)
			if err := d.be.readAt(split(got, seg), off, n); err != nil {
				t.Fatalf("op %d: read %d at %d: %v", i, n, off, err)
			}
			if j := firstDiff(got, model[off:off+n]); j >= 0 {
				t.Fatalf("op %d: read %d at %d differs at byte %d", i, n, off, off+uint64(j))
			}
		}
	}
	d.check(t, model)
}

func TestCowOutOfRange(t *testing.T) {
	const size = 2*cs + 512
	d := newCowDisk(t, pattern(size, 9))
	buf := make([]byte, 1024)
	huge := ^uint64(0)
	for _, tc := range []struct {
		name    string
		bufs    [][]byte
		off, n  uint64
		outside bool // write-zeroes of off, n fails too
	}{
		{"past the end", [][]byte{buf}, size - 512, 1024, true},
		{"after the end", [][]byte{buf[:512]}, size + 512, 512, true},
		{"huge offset", [][]byte{buf[:512]}, 1 << 63, 512, true},
		{"wrapping length", [][]byte{buf}, 512, huge - 511, true},
		{"length above the buffers", [][]byte{buf[:512]}, 0, 1024, false},
		{"length below the buffers", [][]byte{buf}, 0, 512, false},
		{"no buffers", nil, 0, 512, false},
	} {
		for _, write := range []bool{false, true} {
			var err error
			if write {
				err = d.be.writeAt(tc.bufs, tc.off, tc.n)
			} else {
				err = d.be.readAt(tc.bufs, tc.off, tc.n)
			}
			if !errors.Is(err, errOutOfRange) {
				t.Errorf("%s (write %v): %v, want errOutOfRange", tc.name, write, err)
			}
		}
		if !tc.outside {
			continue
		}
		if err := d.be.zeroRange(tc.off, tc.n, false); !errors.Is(err, errOutOfRange) {
			t.Errorf("%s: zero: %v, want errOutOfRange", tc.name, err)
		}
	}
	if err := d.be.readAt(nil, size, 0); err != nil {
		t.Errorf("empty read at the end: %v", err)
	}
	d.check(t, d.orig)
}

func TestByteRange(t *testing.T) {
	a, b, c := []byte("abc"), []byte("defgh"), []byte("ij")
	bufs := [][]byte{a, b, {}, c}
	for _, tc := range []struct {
		from, n uint64
		want    []string
	}{
		{0, 10, []string{"abc", "defgh", "ij"}},
		{0, 3, []string{"abc"}},
		{1, 4, []string{"bc", "de"}},
		{3, 5, []string{"defgh"}},
		{4, 6, []string{"efgh", "ij"}},
		{9, 1, []string{"j"}},
		{2, 0, nil},
		{10, 5, nil},
		{8, 100, []string{"ij"}},
	} {
		var got []string
		for _, s := range byteRange(nil, bufs, tc.from, tc.n) {
			got = append(got, string(s))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("byteRange(%d, %d) = %q, want %q", tc.from, tc.n, got, tc.want)
		}
	}
	// The pieces alias bufs.
	p := byteRange(nil, bufs, 4, 1)
	p[0][0] = 'E'
	if b[1] != 'E' {
		t.Error("byteRange copied the data")
	}
}

func TestOpenBackedErrors(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, size int) string {
		p := filepath.Join(dir, name)
		sparseOverlay(t, p, int64(size))
		return p
	}
	base := file("base.img", 8*cs)
	overlay := file("overlay.img", 8*cs)
	small := file("small.img", 4*cs)
	written := file("written.img", 8*cs)
	if err := os.WriteFile(written, pattern(cs, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(written, 8*cs); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.img")
	for _, tc := range []struct {
		name    string
		cfg     Config
		is      error
		wantErr []string // substrings of the error
	}{
		{"size mismatch", Config{Path: small, Backing: base}, nil,
			[]string{small, base, fmt.Sprint(4 * cs), fmt.Sprint(8 * cs), "same size"}},
		{"base missing", Config{Path: overlay, Backing: missing}, os.ErrNotExist, []string{"backing image", missing}},
		{"overlay missing", Config{Path: missing, Backing: base}, os.ErrNotExist, []string{missing}},
		{"base is a directory", Config{Path: overlay, Backing: dir}, nil, []string{dir, "not a regular file"}},
		{"base is a FIFO", Config{Path: overlay, Backing: fifo}, nil, []string{fifo, "not a regular file"}},
		{"overlay is a FIFO", Config{Path: fifo, Backing: base}, nil, []string{fifo, "not a regular file"}},
		{"overlay holds data", Config{Path: written, Backing: base}, nil, []string{written, "holds data"}},
		{"read-only", Config{Path: overlay, Backing: base, ReadOnly: true}, nil, []string{"writable, buffered"}},
		{"O_DIRECT", Config{Path: overlay, Backing: base, Direct: true}, nil, []string{"writable, buffered"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, err := openBackend(tc.cfg)
			if err == nil {
				be.close()
				t.Fatal("opened")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

// TestBackedDrive drives a backed disk through the queue.
func TestBackedDrive(t *testing.T) { ioModes(t, testBackedDrive) }

func testBackedDrive(t *testing.T) {
	base := pattern(1<<20, 0x42)
	d := newCowDisk(t, base)
	d.be.close() // the device opens its own
	r := newRig(t, Config{ID: "root", Path: d.overlay, Backing: d.base}, nil, 0)
	f := r.dev.Features()
	if virtio.HasFeature(f, FDiscard) || virtio.HasFeature(f, FWriteZeroes) || virtio.HasFeature(f, FRO) || !virtio.HasFeature(f, FFlush) {
		t.Errorf("features %#x: want FLUSH, and no DISCARD, WRITE_ZEROES or RO", f)
	}
	r.dev.loop.Call(func() {
		if be := r.dev.be; be.ring != nil || be.direct || be.nowaitRead || be.discard || be.cow == nil {
			t.Errorf("backed backend: ring %v, direct %v, nowaitRead %v, discard %v, cow %v",
				be.ring != nil, be.direct, be.nowaitRead, be.discard, be.cow != nil)
		}
	})
	if r.dev.Capacity() != 1<<20/SectorSize {
		t.Errorf("capacity %d", r.dev.Capacity())
	}
	got := make([]byte, 16<<10)
	if st, _ := r.request(TypeIn, 7, got, 4096, false); st != StatusOK || !bytes.Equal(got, base[7*512:7*512+len(got)]) {
		t.Fatalf("read of the base: status %d, equal %v", st, bytes.Equal(got, base[7*512:7*512+len(got)]))
	}
	w := pattern(3*512, 0x99)
	if st, _ := r.request(TypeOut, 9, w, 512, false); st != StatusOK {
		t.Fatalf("write: status %d", st)
	}
	if st, _ := r.request(TypeFlush, 0, nil, 1, false); st != StatusOK {
		t.Fatalf("flush: status %d", st)
	}
	want := slices.Clone(base[:16<<10])
	copy(want[9*512:], w)
	if st, _ := r.request(TypeIn, 0, got, 1536, true); st != StatusOK || !bytes.Equal(got, want) {
		t.Fatalf("read back: status %d, equal %v", st, bytes.Equal(got, want))
	}
	for _, typ := range []uint32{TypeDiscard, TypeWriteZeroes} {
		seg := make([]byte, 16)
		binary.LittleEndian.PutUint64(seg, 8)
		binary.LittleEndian.PutUint32(seg[8:], 8)
		if st, _ := r.request(typ, 0, seg, 16, false); st != StatusUnsupp {
			t.Errorf("request %d: status %d, want UNSUPP", typ, st)
		}
	}
	if b, _ := os.ReadFile(d.base); !bytes.Equal(b, base) {
		t.Error("the base image changed")
	}
	o, _ := os.ReadFile(d.overlay)
	if !bytes.Equal(o[9*512:12*512], w) || !bytes.Equal(o[8*512:9*512], base[8*512:9*512]) || !bytes.Equal(o[12*512:16*512], base[12*512:16*512]) {
		t.Error("the overlay does not hold the written cluster (base bytes around the write)")
	}
}

// TestBackedPlug plugs a backed disk into a slot that offered discard
// and write-zeroes at probe: both still keep the disk right.
func TestBackedPlug(t *testing.T) {
	r := newSlotRig(t)
	base := pattern(256<<10, 0x24)
	d := newCowDisk(t, base)
	d.be.close()
	if err := r.dev.Plug(Config{ID: "c1", Path: d.overlay, Backing: d.base, Serial: "c1"}); err != nil {
		t.Fatal(err)
	}
	seg := func(sector uint64, n uint32) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, sector)
		binary.LittleEndian.PutUint32(b[8:], n)
		return b
	}
	if st, _ := r.request(TypeWriteZeroes, 0, seg(3, 20), 16, false); st != StatusOK {
		t.Fatalf("write zeroes: status %d", st)
	}
	if st, _ := r.request(TypeDiscard, 0, seg(100, 16), 16, false); st != StatusOK {
		t.Fatalf("discard: status %d", st)
	}
	want := slices.Clone(base[:64<<10])
	clear(want[3*512 : 23*512])
	got := make([]byte, len(want))
	if st, _ := r.request(TypeIn, 0, got, 4096, false); st != StatusOK || !bytes.Equal(got, want) {
		t.Fatalf("read after write zeroes and discard: status %d, equal %v", st, bytes.Equal(got, want))
	}
	if err := r.dev.Unplug("slot0"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(d.base); !bytes.Equal(b, base) {
		t.Error("the base image changed")
	}
}

// FuzzCowLayer runs requests decoded from the input against a reference
// copy of the disk. Input: two bytes of disk geometry, then up to
// maxFuzzOps six-byte operations (kind, offset, length, buffer size).
func FuzzCowLayer(f *testing.F) {
	f.Add([]byte{3, 0, 1, 0, 5, 0, 2, 0, 0, 0, 0, 0, 16, 0})
	f.Add([]byte{7, 0x60, 1, 0, 60, 0, 3, 2, 2, 0, 8, 0, 40, 0, 5, 1, 0, 0, 200, 0, 10})
	f.Add([]byte{1, 0xff, 5, 0x10, 0, 0x20, 0, 7, 1, 0, 0, 0, 0xff, 0xff, 3})
	// Inputs stay short: the engine minimizes every new one, in time
	// quadratic in its length.
	const maxFuzzOps = 48
	scratch := make([]byte, 128*SectorSize)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		size := uint64(1+in[0]%8)*cs - uint64(in[1])*16%cs // not always whole clusters or sectors
		in = in[2:]
		base := pattern(int(size), in0(in))
		c, baseFd := memCow(t, base, size)
		model := slices.Clone(base)
		sectors := size / SectorSize
		for ops := 0; len(in) >= 6 && ops < maxFuzzOps; in, ops = in[6:], ops+1 {
			kind := in[0]
			a, b := uint64(binary.LittleEndian.Uint16(in[1:])), uint64(binary.LittleEndian.Uint16(in[3:]))
			seg := int(in[5])
			var off, n uint64
			if kind&4 != 0 {
				// Any bytes: the layer must not rely on the device's checks.
				off, n, seg = a, b%uint64(len(scratch)), seg*37+1
			} else {
				// Sectors, as the device sends them (past the end too).
				off, n, seg = a%(sectors+4)*SectorSize, b%129*SectorSize, seg%9*SectorSize
			}
			inside := off <= size && n <= size-off
			data := scratch[:n]
			var err error
			switch kind % 4 {
			case 0:
				for i := range data {
					data[i] = byte(i) ^ kind ^ byte(off)
				}
				if err = c.write(split(data, seg), off, n); err == nil {
					copy(model[off:], data)
				}
			case 1:
				if err = c.zero(off, n); err == nil {
					clear(model[off : off+n])
				}
			default:
				if err = c.read(split(data, seg), off, n); err == nil && !bytes.Equal(data, model[off:off+n]) {
					t.Fatalf("read %d at %d differs from the model", n, off)
				}
			}
			if inside != (err == nil) || err != nil && !errors.Is(err, errOutOfRange) {
				t.Fatalf("op %d: %d bytes at %d on a disk of %d: %v", kind, n, off, size, err)
			}
		}
		got := make([]byte, size)
		if err := c.read([][]byte{got}, 0, size); err != nil || !bytes.Equal(got, model) {
			t.Fatalf("disk differs from the model (err %v)", err)
		}
		b := make([]byte, size)
		if _, err := unix.Pread(baseFd, b, 0); err != nil || !bytes.Equal(b, base) {
			t.Fatalf("the base changed (err %v)", err)
		}
	})
}

func in0(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// memCow is a copy-on-write layer over two memfds.
func memCow(t *testing.T, base []byte, size uint64) (*cowLayer, int) {
	t.Helper()
	mk := func(name string) int {
		fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Ftruncate(fd, int64(size)); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	baseFd, overlayFd := mk("base"), mk("overlay")
	if _, err := unix.Pwrite(baseFd, base, 0); err != nil {
		t.Fatal(err)
	}
	return newCowLayer(fileIO{fd: overlayFd, inMemory: true}, fileIO{fd: baseFd, inMemory: true}, size), baseFd
}

const envSeccompChild = "BLK_COW_SECCOMP_CHILD"

// TestBackedSeccomp opens and uses a backed disk in a child process under
// the VMM's seccomp filter, as a disk plugged after boot is.
func TestBackedSeccomp(t *testing.T) {
	if dir := os.Getenv(envSeccompChild); dir != "" {
		seccompChild(dir)
		return
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.img"), pattern(64<<10, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	sparseOverlay(t, filepath.Join(dir, "overlay.img"), 64<<10)
	cmd := exec.Command(os.Args[0], "-test.run=^TestBackedSeccomp$", "-test.count=1")
	cmd.Env = append(os.Environ(), envSeccompChild+"="+dir)
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), "install: ") && strings.Contains(string(out), "not supported") {
		t.Skipf("no seccomp here: %s", out)
	}
	if err != nil || !strings.Contains(string(out), "backed disk ok") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func seccompChild(dir string) {
	fail := func(what string, err error) {
		fmt.Printf("%s: %v\n", what, err)
		os.Exit(3)
	}
	if err := seccomp.Install(seccomp.Process(seccomp.KillProcess), true); err != nil {
		fail("install", err)
	}
	be, err := openBackend(Config{Path: filepath.Join(dir, "overlay.img"), Backing: filepath.Join(dir, "base.img")})
	if err != nil {
		fail("open", err)
	}
	buf := make([]byte, 8192)
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"read", func() error { return be.readAt([][]byte{buf}, 0, 8192) }},
		{"copy-up", func() error { return be.writeAt([][]byte{buf[:512]}, 4096+512, 512) }},
		{"write", func() error { return be.writeAt([][]byte{buf}, 16384, 8192) }},
		{"zero", func() error { return be.zeroRange(1024, 20000, true) }},
		{"flush", be.flush},
		{"close", be.close},
	} {
		if err := step.do(); err != nil {
			fail(step.what, err)
		}
	}
	fmt.Println("backed disk ok")
	os.Exit(0)
}
