package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// maxVmlinux bounds what a bzImage payload may decompress to.
const maxVmlinux = 512 << 20

var (
	lz4Legacy = []byte{0x02, 0x21, 0x4c, 0x18}
	gzipMagic = []byte{0x1f, 0x8b}
)

// Vmlinux returns the ELF kernel inside a bzImage: the setup header's
// payload_offset/payload_length name the compressed kernel, which must be
// LZ4 (legacy frame, as Linux's `make` writes it) or gzip. The ELF is what
// the VMM boots through PVH, skipping the in-guest decompression.
func Vmlinux(bz []byte) ([]byte, error) {
	if len(bz) < 0x250 || binary.LittleEndian.Uint32(bz[0x202:]) != 0x53726448 { // "HdrS"
		return nil, errors.New("not a bzImage (no HdrS setup header)")
	}
	setupSects := int(bz[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects + 1) * 512
	off := int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if start > len(bz) || off > len(bz)-start || n > len(bz)-start-off || n < 4 {
		return nil, fmt.Errorf("bzImage payload %d+%d outside the %d-byte protected-mode part", off, n, len(bz)-start)
	}
	p := bz[start+off : start+off+n]
	var out []byte
	var err error
	switch {
	case bytes.HasPrefix(p, lz4Legacy):
		out, err = lz4LegacyDecode(p[4:], maxVmlinux)
	case bytes.HasPrefix(p, gzipMagic):
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(p)); err == nil {
			zr.Multistream(false)
			out, err = io.ReadAll(io.LimitReader(zr, maxVmlinux+1))
			if err == nil && len(out) > maxVmlinux {
				err = fmt.Errorf("more than %d bytes", maxVmlinux)
			}
		}
	default:
		return nil, fmt.Errorf("bzImage payload compressed with % x...: only LZ4 and gzip are understood (pass -vmlinux)", p[:4])
	}
	if err != nil {
		return nil, fmt.Errorf("decompress bzImage payload: %w", err)
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, errors.New("bzImage payload is not an ELF kernel")
	}
	return out, nil
}

// lz4LegacyDecode decodes the blocks of an LZ4 legacy frame (after its
// magic): each a little-endian uint32 compressed size and an LZ4 block of
// at most 8 MiB. It stops at the end of the input, at another magic, or
// at a size that does not fit in what is left (Linux appends the
// decompressed length after the last block).
func lz4LegacyDecode(src []byte, limit int) ([]byte, error) {
	var out []byte
	for len(src) >= 4 {
		n := binary.LittleEndian.Uint32(src)
		if bytes.Equal(src[:4], lz4Legacy) {
			src = src[4:]
			continue
		}
		if uint64(n) > uint64(len(src)-4) || n == 0 {
			break
		}
		var err error
		if out, err = lz4Block(out, src[4:4+n], limit); err != nil {
			return nil, err
		}
		src = src[4+n:]
	}
	if len(out) == 0 {
		return nil, errors.New("no LZ4 blocks")
	}
	return out, nil
}

// lz4Block appends the decoding of one LZ4 block to dst; matches may
// reach back into what dst already holds (legacy frames chain blocks).
func lz4Block(dst, src []byte, limit int) ([]byte, error) {
	length := func(i int, v int) (int, int, error) {
		for {
			if i >= len(src) {
				return 0, 0, errors.New("lz4: truncated length")
			}
			b := src[i]
			i++
			v += int(b)
			if v > limit {
				return 0, 0, errors.New("lz4: length beyond limit")
			}
			if b != 255 {
				return i, v, nil
			}
		}
	}
	for i := 0; i < len(src); {
		token := src[i]
		i++
		lit := int(token >> 4)
		var err error
		if lit == 15 {
			if i, lit, err = length(i, lit); err != nil {
				return nil, err
			}
		}
		if lit > len(src)-i || len(dst)+lit > limit {
			return nil, errors.New("lz4: literals beyond the block or the limit")
		}
		dst = append(dst, src[i:i+lit]...)
		i += lit
		if i == len(src) {
			break // the last sequence has no match
		}
		if i+2 > len(src) {
			return nil, errors.New("lz4: truncated offset")
		}
		off := int(src[i]) | int(src[i+1])<<8
		i += 2
		if off == 0 || off > len(dst) {
			return nil, fmt.Errorf("lz4: match offset %d outside %d bytes of output", off, len(dst))
		}
		ml := int(token & 15)
		if ml == 15 {
			if i, ml, err = length(i, ml); err != nil {
				return nil, err
			}
		}
		ml += 4
		if len(dst)+ml > limit {
			return nil, errors.New("lz4: output beyond the limit")
		}
		pos := len(dst) - off
		for k := 0; k < ml; k++ { // byte by byte: the match may overlap its copy
			dst = append(dst, dst[pos+k])
		}
	}
	return dst, nil
}
