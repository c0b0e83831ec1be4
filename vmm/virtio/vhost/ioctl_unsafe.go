package vhost

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// vhost ioctls (<linux/vhost.h>), _IOC(dir, 0xAF, nr, size).
const (
	vhostGetFeatures   = 0x8008af00
	vhostSetFeatures   = 0x4008af00
	vhostSetOwner      = 0x0000af01
	vhostSetMemTable   = 0x4008af03
	vhostSetVringNum   = 0x4008af10
	vhostSetVringAddr  = 0x4028af11
	vhostSetVringBase  = 0x4008af12
	vhostSetVringKick  = 0x4008af20
	vhostSetVringCall  = 0x4008af21
	vhostNetSetBackend = 0x4008af30
	vhostVsockSetCID   = 0x4008af60
	vhostVsockSetRun   = 0x4004af61
	vhostMemRegionSize = 32
)

// vringAddr is struct vhost_vring_addr (40 bytes).
type vringAddr struct {
	index    uint32
	flags    uint32
	desc     uint64
	used     uint64
	avail    uint64
	logGuest uint64
}

// vringState is struct vhost_vring_state and struct vhost_vring_file.
type vringState struct {
	index uint32
	num   uint32
}

func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

func ioctlNone(fd int, req uintptr) error { return ioctlPtr(fd, req, nil) }

func ioctlU64(fd int, req uintptr, v uint64) error { return ioctlPtr(fd, req, unsafe.Pointer(&v)) }

func ioctlInt(fd int, req uintptr, v int32) error { return ioctlPtr(fd, req, unsafe.Pointer(&v)) }

func getFeatures(fd int) (uint64, error) {
	var v uint64
	err := ioctlPtr(fd, vhostGetFeatures, unsafe.Pointer(&v))
	return v, err
}

// setVringState issues a vring ioctl that takes struct vhost_vring_state
// or struct vhost_vring_file (an index and a u32 / an fd).
func setVringState(fd int, req uintptr, index, num uint32) error {
	s := vringState{index: index, num: num}
	return ioctlPtr(fd, req, unsafe.Pointer(&s))
}

func setVringAddr(fd int, a *vringAddr) error {
	return ioctlPtr(fd, vhostSetVringAddr, unsafe.Pointer(a))
}

// hostAddr returns the host virtual address of guest range gpa+n.
func hostAddr(mem *guestmem.Memory, gpa, n uint64) (uint64, error) {
	b, err := mem.Slice(gpa, n)
	if err != nil || len(b) == 0 {
		return 0, fmt.Errorf("guest range %#x+%#x: %v", gpa, n, err)
	}
	return uint64(uintptr(unsafe.Pointer(&b[0]))), nil
}

// setMemTable hands the kernel every RAM region (struct vhost_memory
// followed by its regions).
func setMemTable(fd int, mem *guestmem.Memory) error {
	regs := mem.Regions()
	buf := make([]uint64, 1+len(regs)*vhostMemRegionSize/8)
	buf[0] = uint64(len(regs)) // nregions u32, padding u32
	for i, r := range regs {
		if len(r.Host) == 0 {
			return fmt.Errorf("empty guest memory region at %#x", r.GPA)
		}
		o := 1 + i*4
		buf[o] = r.GPA
		buf[o+1] = r.Size
		buf[o+2] = uint64(uintptr(unsafe.Pointer(&r.Host[0])))
		buf[o+3] = 0
	}
	return ioctlPtr(fd, vhostSetMemTable, unsafe.Pointer(&buf[0]))
}
