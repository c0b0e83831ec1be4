package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// ELF constants (only what an x86_64 vmlinux needs).
const (
	elfHeaderSize   = 64
	elfPhdrSize     = 56
	elfClass64      = 2
	elfDataLSB      = 1
	elfMachineX8664 = 62
	elfTypeExec     = 2
	elfTypeDyn      = 3
	ptLoad          = 1
	ptNote          = 4
	maxPhdrs        = 128
	maxNoteSize     = 64 * 1024

	xenElfnotePhys32Entry = 18
)

var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// elfSegment is one PT_LOAD segment.
type elfSegment struct {
	off, paddr, filesz, memsz uint64
}

// elfImage is a parsed ELF64 x86_64 executable.
type elfImage struct {
	entry    uint64
	segments []elfSegment
	pvhEntry uint32
	hasPVH   bool
}

// parseELF parses and checks the ELF header, program headers and notes of
// an image of size bytes. It does not touch guest memory.
func parseELF(r io.ReaderAt, size int64) (*elfImage, error) {
	var h [elfHeaderSize]byte
	if size < elfHeaderSize {
		return nil, fmt.Errorf("ELF header truncated: %d bytes", size)
	}
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return nil, fmt.Errorf("read ELF header: %w", err)
	}
	le := binary.LittleEndian
	switch {
	case !bytes.Equal(h[:4], elfMagic):
		return nil, fmt.Errorf("bad ELF magic % x", h[:4])
	case h[4] != elfClass64:
		return nil, fmt.Errorf("ELF class %d is not ELF64", h[4])
	case h[5] != elfDataLSB:
		return nil, fmt.Errorf("ELF data encoding %d is not little-endian", h[5])
	case le.Uint16(h[18:]) != elfMachineX8664:
		return nil, fmt.Errorf("ELF machine %d is not x86_64", le.Uint16(h[18:]))
	}
	if t := le.Uint16(h[16:]); t != elfTypeExec && t != elfTypeDyn {
		return nil, fmt.Errorf("ELF type %d is not an executable", t)
	}
	img := &elfImage{entry: le.Uint64(h[24:])}
	phoff := le.Uint64(h[32:])
	phentsize := uint64(le.Uint16(h[54:]))
	phnum := uint64(le.Uint16(h[56:]))
	if phentsize < elfPhdrSize {
		return nil, fmt.Errorf("ELF program header size %d < %d", phentsize, elfPhdrSize)
	}
	if phnum == 0 || phnum > maxPhdrs {
		return nil, fmt.Errorf("ELF has %d program headers, want 1..%d", phnum, maxPhdrs)
	}
	if phoff > uint64(size) || phnum*phentsize > uint64(size)-phoff {
		return nil, fmt.Errorf("ELF program headers [%#x, +%d*%d) beyond file size %d", phoff, phnum, phentsize, size)
	}
	phdrs := make([]byte, phnum*phentsize)
	if _, err := r.ReadAt(phdrs, int64(phoff)); err != nil {
		return nil, fmt.Errorf("read ELF program headers: %w", err)
	}
	for i := uint64(0); i < phnum; i++ {
		p := phdrs[i*phentsize:]
		typ := le.Uint32(p[0:])
		off, paddr := le.Uint64(p[8:]), le.Uint64(p[24:])
		filesz, memsz := le.Uint64(p[32:]), le.Uint64(p[40:])
		if off > uint64(size) || filesz > uint64(size)-off {
			return nil, fmt.Errorf("ELF segment %d [%#x, +%#x) beyond file size %d", i, off, filesz, size)
		}
		switch typ {
		case ptLoad:
			if memsz < filesz {
				return nil, fmt.Errorf("ELF segment %d: memsz %#x < filesz %#x", i, memsz, filesz)
			}
			if paddr+memsz < paddr {
				return nil, fmt.Errorf("ELF segment %d: %#x+%#x wraps", i, paddr, memsz)
			}
			img.segments = append(img.segments, elfSegment{off: off, paddr: paddr, filesz: filesz, memsz: memsz})
		case ptNote:
			if img.hasPVH || filesz > maxNoteSize {
				continue
			}
			note := make([]byte, filesz)
			if _, err := r.ReadAt(note, int64(off)); err != nil {
				return nil, fmt.Errorf("read ELF note segment %d: %w", i, err)
			}
			img.pvhEntry, img.hasPVH = findPVHEntry(note)
		}
	}
	if len(img.segments) == 0 {
		return nil, fmt.Errorf("ELF has no PT_LOAD segment")
	}
	return img, nil
}

// findPVHEntry scans a PT_NOTE payload for the Xen
// XEN_ELFNOTE_PHYS32_ENTRY note and returns its first 4 bytes (LE): the
// field is declared .long by Xen but Linux emits a pointer-sized value.
func findPVHEntry(b []byte) (uint32, bool) {
	le := binary.LittleEndian
	for len(b) >= 12 {
		namesz, descsz, typ := uint64(le.Uint32(b[0:])), uint64(le.Uint32(b[4:])), le.Uint32(b[8:])
		nameEnd := 12 + align4(namesz)
		descEnd := nameEnd + align4(descsz)
		if nameEnd > uint64(len(b)) || descEnd > uint64(len(b)) || nameEnd+descsz > uint64(len(b)) {
			return 0, false
		}
		name := b[12 : 12+namesz]
		if typ == xenElfnotePhys32Entry && descsz >= 4 && bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("Xen")) {
			return le.Uint32(b[nameEnd:]), true
		}
		b = b[descEnd:]
	}
	return 0, false
}

// align4 rounds n up to a multiple of 4 (n is at most 2^32).
func align4(n uint64) uint64 { return (n + 3) &^ 3 }
