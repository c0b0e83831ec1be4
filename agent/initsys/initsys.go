// Package initsys does the agent's PID 1 duties in the guest: the base
// mounts (/proc, /sys, /dev, /run, cgroup2), the console as standard
// streams, the kernel modules the image lists (finit_module), the runc
// image on /usr, cgroup controllers, and power-off. It holds no state.
package initsys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

type mnt struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

var baseMounts = []mnt{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"run", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmp", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate"},
}

// MountBase mounts the base filesystems; already mounted ones are kept.
func MountBase() error {
	for _, m := range baseMounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	// /dev/ptmx must be the new devpts instance's.
	os.Remove("/dev/ptmx")
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return fmt.Errorf("/dev/ptmx: %w", err)
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		os.Symlink(l[0], l[1])
	}
	return nil
}

// ConsoleStdio makes /dev/console the standard streams when the kernel
// could not (an initramfs without /dev/console).
func ConsoleStdio() error {
	if _, err := unix.FcntlInt(2, unix.F_GETFD, 0); err == nil {
		return nil
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open console: %w", err)
	}
	for i := 0; i < 3; i++ {
		if i != fd {
			unix.Dup2(fd, i)
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
	return nil
}

// EnableControllers delegates every available controller to children of
// the cgroup v2 root.
func EnableControllers(root string) error {
	b, err := os.ReadFile(root + "/cgroup.controllers")
	if err != nil {
		return err
	}
	for _, c := range strings.Fields(string(b)) {
		if err := os.WriteFile(root+"/cgroup.subtree_control", []byte("+"+c), 0); err != nil {
			log.L.Warnf("enable cgroup controller %s: %v", c, err)
		}
	}
	return nil
}

// ModuleList parses the image's module list: one module file per line in
// load order, optional parameters after the first space; '#' comments.
func ModuleList(b []byte) [][2]string {
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		path, params, _ := strings.Cut(line, " ")
		out = append(out, [2]string{path, strings.TrimSpace(params)})
	}
	return out
}

// LoadModules loads the modules listed in the file at list, in order;
// a module already loaded (or built in) is fine.
func LoadModules(list string) error {
	b, err := os.ReadFile(list)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ModuleList(b) {
		if err := loadModule(m[0], m[1]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), params, 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	log.L.Debugf("module %s loaded", path)
	return nil
}

// PowerOff syncs and ends the machine: powers it off through ACPI, or
// without ACPI (the microVM kernel) resets it, which ends the VM in a
// microVM VMM (reboot=k: the i8042 reset line). A kernel without a way
// to power off would halt instead, leaving the VM running with nothing
// in it.
func PowerOff() {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if _, err := os.Stat("/sys/firmware/acpi"); err != nil {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		log.L.Errorf("power off: %v", err)
	}
	select {}
}

// MountUsr mounts the read-only erofs at dev (the runc image,
// agentv1.RuncDevice) on /usr, if the VM has a virtio-pmem device: the
// guest image keeps runc and its libraries there rather than in the
// initramfs. It reports how long it waited for dev: the kernel probes the
// virtio device before /init runs, but registers nvdimm's regions and
// namespaces asynchronously, in a domain it does not wait for. With a
// modular kernel, call it after LoadModules.
func MountUsr(sysVirtio, dev string, wait time.Duration) (mounted bool, waited time.Duration, err error) {
	if !HasVirtioDevice(sysVirtio, virtioIDPmem) {
		return false, 0, nil
	}
	start := time.Now()
	for {
		_, err := os.Stat(dev)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return false, time.Since(start), err
		}
		if time.Since(start) > wait {
			return false, time.Since(start), fmt.Errorf("the VM has a virtio-pmem device but no %s after %v", dev, wait)
		}
		time.Sleep(2 * time.Millisecond)
	}
	waited = time.Since(start)
	if err := os.MkdirAll("/usr", 0o755); err != nil {
		return false, waited, err
	}
	// DAX maps the image's pages into processes straight from the host
	// (no copy in the guest's page cache); a kernel without FS_DAX
	// refuses the option, a device without DAX support mounts without.
	flags := uintptr(unix.MS_RDONLY | unix.MS_NODEV)
	if err := unix.Mount(dev, "/usr", "erofs", flags, "dax=always"); err != nil {
		if err := unix.Mount(dev, "/usr", "erofs", flags, ""); err != nil {
			return false, waited, fmt.Errorf("mount %s on /usr: %w", dev, err)
		}
	}
	return true, waited, nil
}

// SysVirtio is where the kernel lists virtio devices.
const SysVirtio = "/sys/bus/virtio/devices"

// virtioIDPmem is the virtio device type of virtio-pmem.
const virtioIDPmem = 27

// HasVirtioDevice reports whether a device of virtio type id is listed
// under sysVirtio (each device's "device" file holds its type, 0x001b).
func HasVirtioDevice(sysVirtio string, id uint32) bool {
	ents, err := os.ReadDir(sysVirtio)
	if err != nil {
		return false
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sysVirtio, e.Name(), "device"))
		if err != nil {
			continue
		}
		var got uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "0x%x", &got); err == nil && got == id {
			return true
		}
	}
	return false
}

// IsDAX reports whether the file at path is accessed with DAX (statx's
// STATX_ATTR_DAX): its pages map straight from the device's memory.
func IsDAX(path string) bool {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, 0, &st); err != nil {
		return false
	}
	return st.Attributes_mask&unix.STATX_ATTR_DAX != 0 && st.Attributes&unix.STATX_ATTR_DAX != 0
}

// Prefault maps every regular file under root once with MAP_POPULATE and
// unmaps it, returning the bytes mapped. On the DAX-mounted runc image
// this makes the guest-physical pages of the files present in the
// hypervisor's nested page tables ahead of runc's first run: where KVM
// is nested, each first touch of a page is an exit that costs far more
// than the guest's own fault.
func Prefault(root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || fi.Size() == 0 {
			return err
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("map %s: %w", p, err)
		}
		total += fi.Size()
		return unix.Munmap(m)
	})
	return total, err
}
