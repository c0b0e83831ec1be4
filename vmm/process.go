package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// vcpuThreads records the host thread of each vCPU (QMP query-cpus).
type vcpuThreads struct {
	mu   sync.Mutex
	tids []int
}

// setupVCPUThread is the vcpu.Config.Setup hook: the vCPU's registers
// (setupVCPU), then its thread id, then Options.OnVCPUThread (where
// cmd/stratovirt installs the vCPU seccomp filter, the last thing before
// the thread first enters the guest).
func (v *VM) setupVCPUThread(c *kvm.VCPU) error {
	if err := v.setupVCPU(c); err != nil {
		return err
	}
	id := c.ID()
	v.threads.mu.Lock()
	if v.threads.tids == nil {
		v.threads.tids = make([]int, v.cfg.Machine.VCPUs)
	}
	if id >= 0 && id < len(v.threads.tids) {
		v.threads.tids[id] = unix.Gettid()
	}
	v.threads.mu.Unlock()
	if v.opts.OnVCPUThread != nil {
		if err := v.opts.OnVCPUThread(id); err != nil {
			return fmt.Errorf("vcpu %d thread hook: %w", id, err)
		}
	}
	return nil
}

// VCPUThreadIDs returns the host thread id of each vCPU by index (0 for
// one not started yet).
func (v *VM) VCPUThreadIDs() []int {
	v.threads.mu.Lock()
	defer v.threads.mu.Unlock()
	out := make([]int, v.cfg.Machine.VCPUs)
	copy(out, v.threads.tids)
	return out
}

// memoryOptions chooses how guest RAM is mapped from the machine config:
// anonymous private memory by default, advised for transparent huge pages
// as QEMU and Cloud Hypervisor do (the host's THP setting decides; with it,
// boot to the agent took 2.3 s instead of 3.3 s in the lab for 4% more
// touched memory, docs/performance.md); with mem-path a file (a new
// unlinked file in a directory, or the named file, created and unlinked
// if it did not exist) mapped shared; with mem-share and no path a memfd
// mapped shared. MemMerge offers private RAM to KSM (guestmem.Options.
// Mergeable). On hugetlbfs the file is fully allocated up front, so a
// short huge page pool fails here rather than with SIGBUS in the guest.
// The returned fd (if any) is for guestmem.New; the caller closes it once
// RAM is mapped.
func memoryOptions(m config.Machine, total uint64) (guestmem.Options, error) {
	opts := guestmem.Options{Shared: m.MemShare, DumpGuestCore: m.DumpGuestCore, HugePages: true, Mergeable: m.MemMerge}
	var f *os.File
	var err error
	switch {
	case m.MemPath != "":
		f, err = openMemPath(m.MemPath, total)
	case m.MemShare:
		var fd int
		if fd, err = unix.MemfdCreate("stratovirt_anon_mem", unix.MFD_CLOEXEC); err != nil {
			return opts, fmt.Errorf("memfd_create for shared guest memory: %w", err)
		}
		f = os.NewFile(uintptr(fd), "memfd:stratovirt_anon_mem")
		if err = f.Truncate(int64(total)); err != nil {
			f.Close()
			return opts, fmt.Errorf("size shared guest memory to %d bytes: %w", total, err)
		}
	default:
		return opts, nil
	}
	if err != nil {
		return opts, err
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return opts, fmt.Errorf("dup guest memory fd: %w", err)
	}
	unix.CloseOnExec(fd)
	opts.FD, opts.UseFD, opts.Shared = fd, true, true
	return opts, nil
}

// openMemPath opens the -mem-path backing file and makes it total bytes.
func openMemPath(path string, total uint64) (*os.File, error) {
	statPath := path
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		statPath = filepath.Dir(path)
	}
	page, huge, err := config.PageSizeAt(statPath)
	if err != nil {
		return nil, fmt.Errorf("mem-path %q: %w", path, err)
	}
	if huge && total%page != 0 {
		return nil, fmt.Errorf("mem-path %q: memory size %d is not a multiple of the huge page size %d", path, total, page)
	}
	var f *os.File
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		if f, err = os.CreateTemp(path, "stratovirt_backmem_"); err != nil {
			return nil, fmt.Errorf("mem-path: create backing file in %q: %w", path, err)
		}
		os.Remove(f.Name())
	case err == nil:
		if f, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			return nil, fmt.Errorf("mem-path: %w", err)
		}
		if uint64(fi.Size()) < total && !huge {
			f.Close()
			return nil, fmt.Errorf("mem-path: backing file %q has %d bytes, guest memory needs %d", path, fi.Size(), total)
		}
	case errors.Is(err, os.ErrNotExist):
		if f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return nil, fmt.Errorf("mem-path: %w", err)
		}
		os.Remove(path)
	default:
		return nil, fmt.Errorf("mem-path: %w", err)
	}
	name := filepath.Base(f.Name())
	if huge {
		// Reserve the huge pages now; ENOSPC means the pool is too small.
		if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(total)); err != nil {
			f.Close()
			return nil, fmt.Errorf("mem-path %q: allocate %d MiB of %d KiB huge pages: %w (reserve more with sysctl vm.nr_hugepages)",
				path, total>>20, page>>10, err)
		}
	} else if fi == nil || fi.IsDir() || uint64(fi.Size()) < total {
		if err := f.Truncate(int64(total)); err != nil {
			f.Close()
			return nil, fmt.Errorf("mem-path: size %s to %d bytes: %w", name, total, err)
		}
	}
	return f, nil
}
