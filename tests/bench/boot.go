package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// BootEnv names what the boot and memory benchmarks run.
type BootEnv struct {
	VMM        string // our cmd/stratovirt binary
	QEMU       string // qemu-system-x86_64
	BzImage    string // Debian cloud kernel
	Vmlinux    string // its ELF vmlinux (PVH)
	ExitInitrd string // initramfs whose init writes 1 to port 0xf4 at once
	IdleInitrd string // initramfs whose init prints READY and sleeps
	PVHPayload string // PVH ELF that writes 1 to port 0xf4 as its first instructions
	Runs       int
}

// Cmdline is the kernel command line both VMMs boot with.
const Cmdline = "console=ttyS0 quiet panic=1 reboot=k"

// debugExitStatus is how both VMMs exit when the guest writes 1 to 0xf4.
const debugExitStatus = 3

func (e BootEnv) ours(kernel, initrd, mem string) *exec.Cmd {
	args := []string{"-name", "bench", "-kernel", kernel, "-m", mem, "-smp", "1", "-serial", "stdio", "-append", Cmdline}
	if initrd != "" {
		args = append(args, "-initrd", initrd)
	}
	return exec.Command(e.VMM, args...)
}

func (e BootEnv) qemu(kernel, initrd, mem string) *exec.Cmd {
	args := []string{"-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", mem, "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-kernel", kernel, "-append", Cmdline, "-device", "isa-debug-exit,iobase=0xf4"}
	if initrd != "" {
		args = append(args, "-initrd", initrd)
	}
	return exec.Command(e.QEMU, args...)
}

// timed runs cmd to completion and returns its wall time and CPU time
// (user+system) in milliseconds; the exit status must be want.
func timed(cmd *exec.Cmd, want int) (wall, cpu float64, err error) {
	var stderr strings.Builder
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	cmd.Wait()
	timer.Stop()
	w := time.Since(start)
	if code := cmd.ProcessState.ExitCode(); code != want {
		return 0, 0, fmt.Errorf("%s exited %d, want %d: %s", cmd.Path, code, want, strings.TrimSpace(stderr.String()))
	}
	c := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return float64(w.Microseconds()) / 1000, float64(c.Microseconds()) / 1000, nil
}

// BootRows measures boot to guest init (spawn to the init's write to the
// debug-exit port) for the bzImage and the vmlinux, VMM start to the first
// guest instructions, and VMM CPU time, ours against QEMU microvm, runs
// interleaved. A case whose peer fails keeps our series and says in its
// note why the peer failed (QEMU 10 does not boot the PVH vmlinux), which
// does not fail the group; a case of ours that fails is returned and the
// other cases still run.
func BootRows(e BootEnv) ([]Row, error) {
	var rows []Row
	var errs []error
	for _, k := range []struct{ name, kernel, initrd, boot, cpu string }{
		{"bzImage", e.BzImage, e.ExitInitrd, "boot to init, bzImage, 1 vCPU, 256 MiB", "VMM CPU time, boot to init, bzImage"},
		{"vmlinux (PVH)", e.Vmlinux, e.ExitInitrd, "boot to init, vmlinux (PVH), 1 vCPU, 256 MiB", "VMM CPU time, boot to init, vmlinux (PVH)"},
		{"payload", e.PVHPayload, "", "VMM start to first guest instruction", "VMM CPU time, start to first guest instruction"},
	} {
		var oursWall, oursCPU, peerWall, peerCPU []float64
		var oursErr, peerErr error
		for i := 0; i < e.Runs && oursErr == nil; i++ {
			w, c, err := timed(e.ours(k.kernel, k.initrd, "256M"), debugExitStatus)
			if err != nil {
				oursErr = fmt.Errorf("ours, %s: %w", k.name, err)
				break
			}
			oursWall, oursCPU = append(oursWall, w), append(oursCPU, c)
			if peerErr != nil {
				continue // one failure is enough: each costs a timeout
			}
			if w, c, err = timed(e.qemu(k.kernel, k.initrd, "256M"), debugExitStatus); err != nil {
				peerErr = fmt.Errorf("qemu, %s: %w", k.name, err)
				continue
			}
			peerWall, peerCPU = append(peerWall, w), append(peerCPU, c)
		}
		if oursErr != nil {
			errs = append(errs, oursErr)
			continue
		}
		b := NewRow(k.boot, "ms", oursWall, "qemu microvm", peerWall)
		c := NewRow(k.cpu, "ms", oursCPU, "qemu microvm", peerCPU)
		if peerErr != nil {
			b.Note = "the peer failed: " + peerErr.Error()
		}
		rows = append(rows, b, c)
	}
	return rows, errors.Join(errs...)
}

// MemRows measures the host memory a VMM process uses besides guest RAM
// (StratoVirt's method: the sum over the process's mappings other than
// guest RAM), RSS and PSS, with the guest idle in its init.
func MemRows(e BootEnv, runs int) ([]Row, error) {
	var rows []Row
	for _, mem := range []struct {
		arg   string
		bytes uint64
	}{{"256M", 256 << 20}, {"1G", 1 << 30}} {
		var oursRSS, oursPSS, peerRSS, peerPSS []float64
		for i := 0; i < runs; i++ {
			rss, pss, err := idleOverhead(e.ours(e.BzImage, e.IdleInitrd, mem.arg), mem.bytes)
			if err != nil {
				return rows, fmt.Errorf("ours, %s: %w", mem.arg, err)
			}
			oursRSS, oursPSS = append(oursRSS, rss), append(oursPSS, pss)
			rss, pss, err = idleOverhead(e.qemu(e.BzImage, e.IdleInitrd, mem.arg), mem.bytes)
			if err != nil {
				return rows, fmt.Errorf("qemu, %s: %w", mem.arg, err)
			}
			peerRSS, peerPSS = append(peerRSS, rss), append(peerPSS, pss)
		}
		rows = append(rows,
			NewRow("VMM memory overhead RSS, "+mem.arg+" guest", "MiB", oursRSS, "qemu microvm", peerRSS),
			NewRow("VMM memory overhead PSS, "+mem.arg+" guest", "MiB", oursPSS, "qemu microvm", peerPSS))
	}
	return rows, nil
}

// idleOverhead boots cmd's guest to "READY" on its console, then sums RSS
// and PSS over the process's mappings except guest RAM (anonymous
// mappings the size of guest memory, up to 8 MiB larger for alignment).
func idleOverhead(cmd *exec.Cmd, guestBytes uint64) (rss, pss float64, err error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		found := false
		for sc.Scan() {
			if !found && strings.Contains(sc.Text(), "READY") {
				found = true
				ready <- true
			}
		}
		if !found {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			return 0, 0, errors.New("guest ended before READY")
		}
	case <-time.After(2 * time.Minute):
		return 0, 0, errors.New("guest not READY within 2 minutes")
	}
	time.Sleep(500 * time.Millisecond) // let the VMM settle
	return smapsOverhead(cmd.Process.Pid, guestBytes)
}

func smapsOverhead(pid int, guestBytes uint64) (rssMiB, pssMiB float64, err error) {
	m, err := smaps(pid, guestBytes)
	return m.RSS, m.PSS, err
}

// imageNames are the file names of the guest image's read-only images
// (the root image the shim boots by default, the runc image of an
// initramfs boot), which the shim maps into the guest as virtio-pmem:
// host page cache that every VM shares.
var imageNames = map[string]bool{"root.erofs": true, "runc.erofs": true}

// memUse is a process's memory in MiB: RSS and PSS of its mappings other
// than guest RAM and the runc image, the RSS of guest RAM (what the guest
// touched) and the RSS and PSS of the runc image's mapping.
type memUse struct {
	RSS, PSS, GuestRSS, ImageRSS, ImagePSS float64
}

func (m memUse) add(o memUse) memUse {
	return memUse{m.RSS + o.RSS, m.PSS + o.PSS, m.GuestRSS + o.GuestRSS, m.ImageRSS + o.ImageRSS, m.ImagePSS + o.ImagePSS}
}

// smaps reads pid's memory from /proc/PID/smaps: guest RAM is the
// anonymous mapping of guestBytes (up to 8 MiB more), the runc image the
// mapping of a file named in imageNames.
func smaps(pid int, guestBytes uint64) (memUse, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return memUse{}, err
	}
	defer f.Close()
	var rss, pss, guestRSS, imageRSS, imagePSS uint64
	guest, image := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // mapping header
			guest, image = false, false
			switch {
			case len(fields) == 5: // anonymous: no path
				var lo, hi uint64
				if _, err := fmt.Sscanf(fields[0], "%x-%x", &lo, &hi); err == nil {
					sz := hi - lo
					guest = sz >= guestBytes && sz <= guestBytes+8<<20
				}
			case len(fields) >= 6:
				image = imageNames[filepath.Base(fields[5])]
			}
			continue
		}
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(fields[1], 10, 64)
		switch {
		case guest:
			if fields[0] == "Rss:" {
				guestRSS += v
			}
		case image:
			switch fields[0] {
			case "Rss:":
				imageRSS += v
			case "Pss:":
				imagePSS += v
			}
		default:
			switch fields[0] {
			case "Rss:":
				rss += v
			case "Pss:":
				pss += v
			}
		}
	}
	mib := func(kb uint64) float64 { return float64(kb) / 1024 }
	return memUse{mib(rss), mib(pss), mib(guestRSS), mib(imageRSS), mib(imagePSS)}, sc.Err()
}
