package amd64

import (
	"encoding/binary"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// Page-table entry bits.
const (
	PTEPresent  = 1 << 0
	PTEWritable = 1 << 1
	PTEPageSize = 1 << 7 // in a PD entry: a 2 MiB page
)

// IdentityMapSize is how much the boot page tables identity-map: all of
// low RAM, the MMIO hole and therefore everything the kernel, zero page,
// command line and initrd can occupy below 4 GiB.
const IdentityMapSize = PDCount * GiB

// PageTables returns the contents of the boot page tables: the PML4 page,
// the PDPT page and PDCount page directories, each PageSize bytes, to be
// stored at PML4Addr, PDPTAddr and PDAddr+i*PageSize. PML4[0] points at
// the PDPT, PDPT[i] at PD i, and PD i maps [i GiB, i+1 GiB) with 2 MiB
// present, writable pages.
func PageTables() (pml4, pdpt []byte, pds [PDCount][]byte) {
	le := binary.LittleEndian
	pml4 = make([]byte, PageSize)
	le.PutUint64(pml4[0:], PDPTAddr|PTEPresent|PTEWritable)
	pdpt = make([]byte, PageSize)
	for i := range PDCount {
		le.PutUint64(pdpt[8*i:], uint64(PDAddr+i*PageSize)|PTEPresent|PTEWritable)
		pd := make([]byte, PageSize)
		for j := range 512 {
			addr := uint64(i)*GiB + uint64(j)*2*MiB
			le.PutUint64(pd[8*j:], addr|PTEPresent|PTEWritable|PTEPageSize)
		}
		pds[i] = pd
	}
	return pml4, pdpt, pds
}

// WritePageTables stores PageTables at their fixed addresses in mem.
func WritePageTables(mem *guestmem.Memory) error {
	pml4, pdpt, pds := PageTables()
	if err := mem.WriteAt(pml4, PML4Addr); err != nil {
		return fmt.Errorf("write PML4: %w", err)
	}
	if err := mem.WriteAt(pdpt, PDPTAddr); err != nil {
		return fmt.Errorf("write PDPT: %w", err)
	}
	for i, pd := range pds {
		if err := mem.WriteAt(pd, uint64(PDAddr+i*PageSize)); err != nil {
			return fmt.Errorf("write PD %d: %w", i, err)
		}
	}
	return nil
}
