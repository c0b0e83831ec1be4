// Package blktest holds what the virtio-blk lab tests and the block
// benchmark share: the deterministic disk pattern that host and guest both
// compute, and the preparation of the guest initramfs (busybox, the
// virtio modules of the Debian cloud kernel and the static guestio tool).
package blktest

import "encoding/binary"

// Fill writes the pattern for (seed, offset off) into p; off and len(p)
// must be multiples of 8. Every 8-byte word depends on its disk offset
// and the seed, so misplaced or stale blocks are detected.
func Fill(p []byte, off uint64, seed uint64) {
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], word(off+uint64(i), seed))
	}
}

// Check returns the offset of the first word of p that does not match the
// pattern, or -1.
func Check(p []byte, off uint64, seed uint64) int64 {
	for i := 0; i+8 <= len(p); i += 8 {
		if binary.LittleEndian.Uint64(p[i:]) != word(off+uint64(i), seed) {
			return int64(off) + int64(i)
		}
	}
	return -1
}

// word is splitmix64 of the word index mixed with the seed.
func word(off, seed uint64) uint64 {
	z := off/8 + seed*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
