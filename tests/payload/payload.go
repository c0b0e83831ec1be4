// Package payload makes tiny x86_64 "kernels" for tests that need a guest
// but not Linux: an ELF64 executable with one PT_LOAD segment, loaded at
// 1 MiB and entered in long mode by the VMM's 64-bit Linux boot path (no
// PVH note). They run on any KVM, including hosts whose KVM emulates guest
// kernel mode, so VMM plumbing is tested without the lab.
package payload

import (
	"encoding/binary"
)

// LoadAddr is where the payload's code is loaded and entered.
const LoadAddr = 0x100000

// DebugPort is the port the payloads report values on, 4 bytes at a time.
const DebugPort = 0xe9

// ELF wraps code as a minimal ELF64 x86_64 executable whose entry point
// and only PT_LOAD segment are at LoadAddr.
func ELF(code []byte) []byte {
	const ehdr, phdr = 64, 56
	b := make([]byte, ehdr+phdr, ehdr+phdr+len(code))
	le := binary.LittleEndian
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELF64, little-endian, version 1
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 62)   // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], LoadAddr) // e_entry
	le.PutUint64(b[32:], ehdr)     // e_phoff
	le.PutUint16(b[52:], ehdr)
	le.PutUint16(b[54:], phdr)
	le.PutUint16(b[56:], 1)
	p := b[ehdr:]
	le.PutUint32(p[0:], 1) // PT_LOAD
	le.PutUint32(p[4:], 7) // RWX
	le.PutUint64(p[8:], ehdr+phdr)
	le.PutUint64(p[16:], LoadAddr)
	le.PutUint64(p[24:], LoadAddr)
	le.PutUint64(p[32:], uint64(len(code)))
	le.PutUint64(p[40:], uint64(len(code)))
	le.PutUint64(p[48:], 0x1000)
	return append(b, code...)
}

// PVHELF is ELF with a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY =
// LoadAddr), so VMMs that support PVH (ours, QEMU) enter code at LoadAddr
// in 32-bit protected mode with paging off.
func PVHELF(code []byte) []byte {
	const ehdr, phdr = 64, 56
	// name "Xen\0", desc: the 64-bit entry as Linux writes it.
	note := make([]byte, 12+4+8)
	le := binary.LittleEndian
	le.PutUint32(note[0:], 4)
	le.PutUint32(note[4:], 8)
	le.PutUint32(note[8:], 18)
	copy(note[12:], "Xen\x00")
	le.PutUint64(note[16:], LoadAddr)
	b := ELF(code)
	// Grow the program header table to two entries: move the code after
	// the note and point the PT_LOAD at its new offset.
	out := make([]byte, 0, len(b)+phdr+len(note))
	out = append(out, b[:ehdr+phdr]...)
	out = append(out, make([]byte, phdr)...)
	le.PutUint16(out[56:], 2)
	codeOff := uint64(ehdr + 2*phdr + len(note))
	le.PutUint64(out[ehdr+8:], codeOff)
	n := out[ehdr+phdr:]
	le.PutUint32(n[0:], 4) // PT_NOTE
	le.PutUint32(n[4:], 4)
	le.PutUint64(n[8:], ehdr+2*phdr)
	le.PutUint64(n[32:], uint64(len(note)))
	le.PutUint64(n[40:], uint64(len(note)))
	le.PutUint64(n[48:], 4)
	out = append(out, note...)
	return append(out, code...)
}

// DebugExit32 is 32-bit code that writes 1 to the 0xf4 debug-exit port at
// once: with PVHELF it times a VMM from start to its first guest
// instructions (ours and QEMU's isa-debug-exit both exit with status 3).
func DebugExit32() []byte {
	return []byte{0xb0, 0x01, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd} // mov al,1; out 0xf4,al; hlt; jmp hlt
}

// UserPortWrite is a static Linux x86_64 executable (no libc) that
// writes value to an I/O port with iopl(3) and exits 0: how a guest's
// init reaches the VMM's boot-marker and debug-exit ports on kernels
// without /dev/port. It must run as root.
func UserPortWrite(port uint16, value byte) []byte {
	code := []byte{
		0xb8, 172, 0, 0, 0, // mov eax, SYS_iopl
		0xbf, 3, 0, 0, 0, // mov edi, 3
		0x0f, 0x05, // syscall
		0x66, 0xba, byte(port), byte(port >> 8), // mov dx, port
		0xb0, value, // mov al, value
		0xee,              // out dx, al
		0xb8, 60, 0, 0, 0, // mov eax, SYS_exit
		0x31, 0xff, // xor edi, edi
		0x0f, 0x05, // syscall
	}
	const ehdr, phdr, base = 64, 56, 0x400000
	b := ELF(code)
	le := binary.LittleEndian
	// User space maps segments by page: the virtual address must have the
	// same page offset as the file offset.
	le.PutUint64(b[24:], base+ehdr+phdr)
	le.PutUint64(b[ehdr+16:], base+ehdr+phdr)
	le.PutUint64(b[ehdr+24:], base+ehdr+phdr)
	return b
}

// Instruction bytes the payloads are made of.
var (
	movEDXDebug = []byte{0xba, DebugPort, 0, 0, 0} // mov edx, DebugPort
	outEAX      = []byte{0xef}                     // out dx, eax
	powerOff    = []byte{
		0x66, 0xba, 0x00, 0x06, // mov dx, 0x600 (ACPI sleep control)
		0xb0, 0x34, // mov al, SLP_EN | S5
		0xee,       // out dx, al
		0xf4,       // hlt
		0xeb, 0xfd, // jmp back to hlt
	}
)

// BootState reports, as 4-byte writes to DebugPort in this order: RSI
// (zero page), the zero page's e820 entry count, CR0, CR3, CR4, EFER, CS,
// RSP, the GDT base, cmd_line_ptr and the first 4 bytes of the command
// line; then powers off through the ACPI sleep-control port.
func BootState() []byte {
	var c []byte
	add := func(b ...byte) { c = append(c, b...) }
	report := func(b ...byte) { add(b...); add(outEAX...) }
	add(movEDXDebug...)
	report(0x48, 0x89, 0xf0)                         // mov rax, rsi
	report(0x0f, 0xb6, 0x86, 0xe8, 0x01, 0x00, 0x00) // movzx eax, byte [rsi+0x1e8]
	report(0x0f, 0x20, 0xc0)                         // mov rax, cr0
	report(0x0f, 0x20, 0xd8)                         // mov rax, cr3
	report(0x0f, 0x20, 0xe0)                         // mov rax, cr4
	add(0xb9, 0x80, 0x00, 0x00, 0xc0)                // mov ecx, IA32_EFER
	add(0x52)                                        // push rdx (rdmsr clobbers edx)
	add(0x0f, 0x32)                                  // rdmsr
	add(0x5a)                                        // pop rdx
	add(outEAX...)
	report(0x8c, 0xc8)                         // mov eax, cs
	report(0x48, 0x89, 0xe0)                   // mov rax, rsp
	add(0x48, 0x83, 0xec, 0x10)                // sub rsp, 16
	add(0x0f, 0x01, 0x04, 0x24)                // sgdt [rsp]
	report(0x8b, 0x44, 0x24, 0x02)             // mov eax, [rsp+2]
	report(0x8b, 0x86, 0x28, 0x02, 0x00, 0x00) // mov eax, [rsi+0x228]
	report(0x8b, 0x00)                         // mov eax, [rax]
	add(powerOff...)
	return c
}

// Spin loops forever without exiting to the VMM.
func Spin() []byte { return []byte{0xeb, 0xfe} }

// TripleFault jumps to an address beyond the identity map: the page fault
// cannot be delivered (no usable IDT), which becomes a triple fault.
func TripleFault() []byte {
	return []byte{
		0x48, 0xb8, 0, 0, 0, 0, 0, 0x40, 0, 0, // mov rax, 0x400000000000
		0xff, 0xe0, // jmp rax
	}
}

// Output writes "ok\n" to the serial port (COM1, 0x3f8) and powers off.
func Output() []byte {
	var c []byte
	c = append(c, 0x66, 0xba, 0xf8, 0x03) // mov dx, 0x3f8
	for _, ch := range []byte("ok\n") {
		c = append(c, 0xb0, ch, 0xee) // mov al, ch; out dx, al
	}
	return append(c, powerOff...)
}

// map2MiB returns code that maps the 2 MiB page at phys (2 MiB aligned,
// below 512 GiB) identity, with a page directory at 0x40000 in the boot
// PDPT at 0xa000 (the slot of phys's GiB), and flushes the TLB. It
// clobbers rax and rdi.
func map2MiB(phys uint64) []byte {
	le := binary.LittleEndian
	pde := uint32(0x40000 + (phys>>21)%512*8)
	pdpte := uint32(0xa000 + (phys>>30)*8)
	var c []byte
	c = append(c, 0xbf) // mov edi, pde
	c = le.AppendUint32(c, pde)
	c = append(c, 0x48, 0xb8) // mov rax, phys | PS|RW|P
	c = le.AppendUint64(c, phys|0x83)
	c = append(c, 0x48, 0x89, 0x07,
		0x48, 0xc7, 0xc0, 0x03, 0x00, 0x04, 0x00, // mov [rdi], rax; mov rax, 0x40000 | RW|P
		0xbf) // mov edi, pdpte
	c = le.AppendUint32(c, pdpte)
	return append(c, 0x48, 0x89, 0x07, // mov [rdi], rax
		0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8) // mov rax, cr3; mov cr3, rax
}

// PmemAt is the guest-physical address PmemReadWrite reads: the first
// virtio-pmem region of a VM with at most 3 GiB of RAM
// (amd64.DeviceMemoryStart).
const PmemAt = 4 << 30

// PmemReadWrite maps the 2 MiB at PmemAt (map2MiB), reports the 4 bytes
// there to DebugPort, writes 0x12345678 over them, reports them again,
// and powers off.
func PmemReadWrite() []byte {
	var c []byte
	add := func(b ...byte) { c = append(c, b...) }
	add(map2MiB(PmemAt)...)
	add(0x48, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00) // mov rdi, PmemAt
	add(movEDXDebug...)
	add(0x8b, 0x07)                         // mov eax, [rdi]
	add(outEAX...)                          //
	add(0xc7, 0x07, 0x78, 0x56, 0x34, 0x12) // mov dword [rdi], 0x12345678
	add(0x8b, 0x07)                         // mov eax, [rdi]
	add(outEAX...)
	add(powerOff...)
	return c
}

// VirtioWindow0 is the first virtio-mmio window (amd64.VirtioMMIOBase),
// where the VMM puts its first virtio device.
const VirtioWindow0 = 0xd000_0000

// VirtioACK maps the 2 MiB at VirtioWindow0 (map2MiB), writes 1 and then
// 2 to the window's InterruptACK register, reports its InterruptStatus to
// DebugPort and powers off.
func VirtioACK() []byte {
	var c []byte
	add := func(b ...byte) { c = append(c, b...) }
	add(map2MiB(VirtioWindow0)...)
	add(0xbf, 0x00, 0x00, 0x00, 0xd0)             // mov edi, VirtioWindow0
	add(0xc7, 0x47, 0x64, 0x01, 0x00, 0x00, 0x00) // mov dword [rdi+0x64], 1
	add(0xc7, 0x47, 0x64, 0x02, 0x00, 0x00, 0x00) // mov dword [rdi+0x64], 2
	add(movEDXDebug...)
	add(0x8b, 0x47, 0x60) // mov eax, [rdi+0x60]
	add(outEAX...)
	add(powerOff...)
	return c
}
