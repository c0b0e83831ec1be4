// Command guestio runs inside test guests (static, no cgo) and exercises
// block devices: pattern write/verify, read-only checks, IOPS and
// throughput measurements with O_DIRECT. It takes one argument, a list of
// steps separated by ';', each "name:arg:arg...", prints one line per
// step and "GUESTIO OK" or "GUESTIO FAIL" at the end.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/blk/blktest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Println("usage: guestio 'step:arg...;step...'")
		os.Exit(2)
	}
	ok := true
	for _, step := range strings.Split(os.Args[1], ";") {
		if step == "" {
			continue
		}
		f := strings.Split(step, ":")
		if err := run(f[0], f[1:]); err != nil {
			fmt.Printf("STEP %s FAIL: %v\n", step, err)
			ok = false
		}
	}
	if ok {
		fmt.Println("GUESTIO OK")
	} else {
		fmt.Println("GUESTIO FAIL")
	}
}

func num(s string) uint64 {
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		panic(fmt.Sprintf("bad number %q", s))
	}
	return n
}

func run(name string, a []string) error {
	switch name {
	case "write": // write:DEV:SEED:BYTES — pattern, O_DIRECT, 1 MiB blocks, fsync
		return pattern(a[0], num(a[1]), num(a[2]), true)
	case "check": // check:DEV:SEED:BYTES
		return pattern(a[0], num(a[1]), num(a[2]), false)
	case "sha": // sha:DEV:BYTES — sha256 of the first BYTES
		return sha(a[0], num(a[1]))
	case "ro": // ro:DEV — the device must refuse writes
		return readOnly(a[0])
	case "iops": // iops:DEV:SECONDS[:QD] — random 4 KiB O_DIRECT reads, QD parallel readers (default 1)
		qd := uint64(1)
		if len(a) > 2 {
			qd = num(a[2])
		}
		d := time.Duration(num(a[1])) * time.Second
		type res struct {
			n   int
			d   time.Duration
			err error
		}
		ch := make(chan res, qd)
		for i := uint64(0); i < qd; i++ {
			go func(seed uint64) {
				n, el, err := randomIOSeed(a[0], d, false, seed)
				ch <- res{n, el, err}
			}(i)
		}
		total, longest := 0, time.Duration(0)
		for i := uint64(0); i < qd; i++ {
			r := <-ch
			if r.err != nil {
				return r.err
			}
			total += r.n
			longest = max(longest, r.d)
		}
		fmt.Printf("IOPS %s %.1f (%d ops in %.3fs, queue depth %d)\n", a[0], float64(total)/longest.Seconds(), total, longest.Seconds(), qd)
		return nil
	case "bench": // bench:DEV:SEQ_MIB:SECONDS
		return bench(a[0], num(a[1]), time.Duration(num(a[2]))*time.Second)
	case "sleep": // sleep:SECONDS (guest clock)
		time.Sleep(time.Duration(num(a[0])) * time.Second)
		return nil
	case "cat": // cat:PATH
		b, err := os.ReadFile(a[0])
		fmt.Printf("CAT %s %q\n", a[0], strings.TrimSpace(string(b)))
		return err
	}
	return fmt.Errorf("unknown step %q", name)
}

func pattern(dev string, seed, size uint64, write bool) error {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(dev, flag|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := alignedBuf(1 << 20)
	start := time.Now()
	for off := uint64(0); off < size; off += uint64(len(buf)) {
		p := buf[:min(uint64(len(buf)), size-off)]
		if write {
			blktest.Fill(p, off, seed)
			if _, err := f.WriteAt(p, int64(off)); err != nil {
				return err
			}
			continue
		}
		if _, err := f.ReadAt(p, int64(off)); err != nil {
			return err
		}
		if bad := blktest.Check(p, off, seed); bad >= 0 {
			return fmt.Errorf("pattern %d mismatch at offset %d", seed, bad)
		}
	}
	if write {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	d := time.Since(start)
	fmt.Printf("PATTERN %s write=%v seed=%d bytes=%d %.1f MiB/s\n", dev, write, seed, size, float64(size)/(1<<20)/d.Seconds())
	return nil
}

func sha(dev string, size uint64) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	buf := alignedBuf(1 << 20)
	for off := uint64(0); off < size; off += uint64(len(buf)) {
		p := buf[:min(uint64(len(buf)), size-off)]
		if _, err := f.ReadAt(p, int64(off)); err != nil {
			return err
		}
		h.Write(p)
	}
	fmt.Printf("SHA %s %d %s\n", dev, size, hex.EncodeToString(h.Sum(nil)))
	return nil
}

func readOnly(dev string) error {
	// Linux may let the device be opened for writing; the writes must
	// fail.
	f, err := os.OpenFile(dev, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		fmt.Printf("RO %s open refused: %v\n", dev, err)
		return nil
	}
	defer f.Close()
	if _, err := f.WriteAt(alignedBuf(4096), 0); err == nil {
		if err := f.Sync(); err == nil {
			return fmt.Errorf("write to read-only disk %s succeeded", dev)
		}
	} else {
		fmt.Printf("RO %s write refused: %v\n", dev, err)
	}
	return nil
}

func randomIO(dev string, d time.Duration, write bool) (int, time.Duration, error) {
	return randomIOSeed(dev, d, write, 0)
}

func randomIOSeed(dev string, d time.Duration, write bool, seed uint64) (int, time.Duration, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(dev, flag|syscall.O_DIRECT, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil || size < 4096 {
		return 0, 0, fmt.Errorf("size %d: %v", size, err)
	}
	blocks := size / 4096
	buf := alignedBuf(4096)
	rng := rand.New(rand.NewPCG(1, 2+seed))
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		off := rng.Int64N(blocks) * 4096
		if write {
			_, err = f.WriteAt(buf, off)
		} else {
			_, err = f.ReadAt(buf, off)
		}
		if err != nil {
			return n, time.Since(start), err
		}
		n++
	}
	return n, time.Since(start), nil
}

func seqIO(dev string, total uint64, bs int, write bool) (float64, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(dev, flag|syscall.O_DIRECT, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := alignedBuf(bs)
	start := time.Now()
	for off := uint64(0); off < total; off += uint64(bs) {
		if write {
			_, err = f.WriteAt(buf, int64(off))
		} else {
			_, err = f.ReadAt(buf, int64(off))
		}
		if err != nil {
			return 0, err
		}
	}
	if write {
		if err := f.Sync(); err != nil {
			return 0, err
		}
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// bench prints sequential 4 KiB read/write throughput over seqMiB and
// random 4 KiB read/write IOPS over d, all O_DIRECT at queue depth 1.
func bench(dev string, seqMiB uint64, d time.Duration) error {
	total := seqMiB << 20
	for _, w := range []bool{false, true} {
		bps, err := seqIO(dev, total, 4096, w)
		if err != nil {
			return err
		}
		name := map[bool]string{false: "seqread", true: "seqwrite"}[w]
		fmt.Printf("BENCH %s MiBps=%.2f IOPS=%.0f\n", name, bps/(1<<20), bps/4096)
	}
	for _, w := range []bool{false, true} {
		n, el, err := randomIO(dev, d, w)
		if err != nil {
			return err
		}
		name := map[bool]string{false: "randread", true: "randwrite"}[w]
		iops := float64(n) / el.Seconds()
		fmt.Printf("BENCH %s MiBps=%.2f IOPS=%.0f\n", name, iops*4096/(1<<20), iops)
	}
	return nil
}
