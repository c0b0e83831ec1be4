package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
	"github.com/stratovirt-go/stratovirt/tests/ksm"
)

// runcRuntime is the peer runtime on the same containerd.
const runcRuntime = "io.containerd.runc.v2"

// startIdle starts an idle container (sleep) detached and returns the
// wall time of `ctr run -d`.
func startIdle(d *ctrd.Daemon, runtime, id string, flags ...string) (float64, error) {
	t0 := time.Now()
	args := append(append([]string{"run", "-d", "--runtime", runtime}, flags...), ctrd.Image, id, "sleep", "100000")
	out, err := d.Ctr(5*time.Minute, "", args...)
	if err != nil {
		return 0, fmt.Errorf("ctr run -d --runtime %s %s: %v: %s", runtime, id, err, out)
	}
	return ms(time.Since(t0)), nil
}

// remove kills and deletes a container started by startIdle.
func remove(d *ctrd.Daemon, id string) {
	d.Ctr(time.Minute, "", "task", "kill", "-s", "SIGKILL", id)
	for i := 0; i < 100; i++ {
		if _, err := d.Ctr(time.Minute, "", "task", "delete", id); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.Ctr(time.Minute, "", "container", "delete", id)
}

// shimPID finds the shim process serving container id (its -id argument).
func shimPID(id string) (int, error) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-id" && args[i+1] == id {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no shim process with -id %s", id)
}

// tree returns pid and all its descendants.
func tree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeMemory sums the memory of pid's process tree (smaps).
func treeMemory(pid int, guestBytes uint64) (memUse, error) {
	var m memUse
	for _, p := range tree(pid) {
		u, err := smaps(p, guestBytes)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // exited since tree listed it (runc's dd, say): it holds nothing now
		}
		if err != nil {
			return memUse{}, err
		}
		m = m.add(u)
	}
	return m, nil
}

// settleLimit bounds how long settledMemory waits for an idle guest to
// give back what it freed (free page reporting: Linux reports free 2 MiB
// blocks about 2 s after they pile up).
const settleLimit = 10 * time.Second

// settledMemory is treeMemory once the guest RAM's RSS stops falling:
// less than 1 MiB down over a second, or settleLimit.
func settledMemory(pid int, guestBytes uint64) (memUse, error) {
	m, err := treeMemory(pid, guestBytes)
	for deadline := time.Now().Add(settleLimit); err == nil && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		var next memUse
		if next, err = treeMemory(pid, guestBytes); err != nil {
			break
		}
		fell := m.GuestRSS - next.GuestRSS
		m = next
		if fell < 1 {
			break
		}
	}
	return m, err
}

// ShimMemRows measures the host memory of an idle container beside its
// guest RAM: our shim process (the VMM runs inside it) against runc's
// shim plus the container's process, both on d, guestMiB of guest RAM.
// The guest image's pages mapped (the root image, or the runc image of an
// initramfs boot: host page cache, shared by every VM) are a row of
// their own.
func ShimMemRows(d *ctrd.Daemon, runs, guestMiB int) ([]Row, error) {
	var oRSS, oPSS, oGuest, oImage, pRSS, pPSS []float64
	for i := 0; i < runs; i++ {
		for _, rt := range []string{ctrd.Runtime, runcRuntime} {
			id := fmt.Sprintf("bench-mem-%d-%d", i, len(oRSS)+len(pRSS))
			if _, err := startIdle(d, rt, id); err != nil {
				return nil, err
			}
			time.Sleep(2 * time.Second) // let the shim settle
			pid, err := shimPID(id)
			var m memUse
			if err == nil {
				m, err = settledMemory(pid, uint64(guestMiB)<<20)
			}
			remove(d, id)
			if err != nil {
				return nil, err
			}
			if rt == ctrd.Runtime {
				oRSS, oPSS, oGuest, oImage = append(oRSS, m.RSS), append(oPSS, m.PSS), append(oGuest, m.GuestRSS), append(oImage, m.ImageRSS)
			} else {
				pRSS, pPSS = append(pRSS, m.RSS), append(pPSS, m.PSS)
			}
		}
	}
	peer := "runc (shim + container process)"
	name := fmt.Sprintf("host memory per idle container, %d MiB guest, excluding guest RAM and the guest image", guestMiB)
	g := NewRow(fmt.Sprintf("guest RAM touched per idle container (%d MiB guest)", guestMiB), "MiB", oGuest, "", nil)
	g.Note = "RSS of the guest RAM mapping in the shim: the kernel and what the guest allocated (the agent and runc run from the guest image, not from guest RAM); counted once per VM on top of the shim's own memory"
	im := NewRow(fmt.Sprintf("guest image mapped per idle container (%d MiB guest)", guestMiB), "MiB", oImage, "", nil)
	im.Note = "RSS of the guest image's virtio-pmem mapping in the shim (root.erofs, populated when the VM is built): host page cache, one copy for all VMs on the host (the density rows count it once)"
	return []Row{
		NewRow(name+", PSS (shim with in-process VMM)", "MiB", oPSS, peer, pPSS),
		NewRow(name+", RSS (shim with in-process VMM)", "MiB", oRSS, peer, pRSS),
		g, im,
	}, nil
}

// memAvailable is /proc/meminfo's MemAvailable in MiB.
func memAvailable() float64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// hostBusy is the CPU time the host has spent busy so far, summed over
// its CPUs: /proc/stat's cpu line less idle and iowait (guest time is
// part of user time there).
func hostBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseBusy(string(b))
}

// parseBusy reads the busy time off the aggregate cpu line of a
// /proc/stat text (in USER_HZ ticks, 100 a second on Linux).
func parseBusy(stat string) (time.Duration, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: no aggregate cpu line with 8 fields: %q", line)
	}
	var busy uint64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: field %d: %w", i+1, err)
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond, nil
}

// busyShare is the share of one CPU the host spends busy over window
// (all its CPUs together: 1.5 is one and a half CPUs).
func busyShare(window time.Duration) (float64, error) {
	b0, err := hostBusy()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	time.Sleep(window)
	b1, err := hostBusy()
	if err != nil {
		return 0, err
	}
	return float64(b1-b0) / float64(time.Since(t0)), nil
}

// idleCPUWindow is how long the density group watches the host's CPU,
// before the containers start and once they all idle.
const idleCPUWindow = 10 * time.Second

// DensityRows starts idle containers one after another up to the last of
// steps (ascending), ours then runc's, and reports the start time of the
// container that makes N running at each step, the host memory each
// idle container takes (MemAvailable's drop over N, once all have idled
// through the CPU window), how many would fit
// in what was available at the start, and the host CPU each idle
// container takes (the host's busy share with all N idling less that
// before the first started). Where the host has KSM, ours runs once more
// with the mem_merge annotation and KSM on (ksm.Start), for the memory
// that merging saves against ours without it.
func DensityRows(d *ctrd.Daemon, steps []int) ([]Row, error) {
	max := steps[len(steps)-1]
	type side struct {
		start   []float64
		perMiB  float64
		fit     float64
		avail0  float64
		running int
		base    float64 // host busy share before the first container
		cpu     float64 // per idle container, % of one CPU
		// The shims' own CPU (ours: the VMM in process) per container, %
		// of one CPU, and the part of it running guest code.
		shimCPU, shimGuest float64
		exits              string // KVM exits a second per container, by kind
		merged             ksm.Stat
		ksmTook            time.Duration
	}
	MountDebugfs()
	// merge starts every container with the mem_merge annotation and
	// turns the host's KSM on once they all run.
	measure := func(rt, prefix string, merge bool) (side, error) {
		var s side
		var err error
		if s.base, err = busyShare(idleCPUWindow); err != nil {
			return s, err
		}
		s.avail0 = memAvailable()
		var ids []string
		defer func() {
			for _, id := range ids {
				remove(d, id)
			}
		}()
		for n := 1; n <= max; n++ {
			id := fmt.Sprintf("%s-%d", prefix, n)
			var flags []string
			if merge {
				flags = []string{"--annotation", ksm.Annotation}
			}
			t, err := startIdle(d, rt, id, flags...)
			if err != nil {
				return s, fmt.Errorf("container %d: %w", n, err)
			}
			ids = append(ids, id)
			s.start = append(s.start, t)
		}
		time.Sleep(2 * time.Second)
		out, _ := d.Ctr(time.Minute, "", "task", "ls")
		s.running = strings.Count(out, "RUNNING")
		var pids []int
		for _, id := range ids {
			if pid, err := shimPID(id); err == nil {
				pids = append(pids, pid)
			}
		}
		shims := func() (total, guest time.Duration) {
			for _, pid := range pids {
				t, g, err := ProcCPU(pid)
				if err == nil {
					total, guest = total+t, guest+g
				}
			}
			return total, guest
		}
		if merge {
			st, took, stop, err := ksm.Start(3 * time.Minute)
			if err != nil {
				return s, err
			}
			defer stop()
			s.merged, s.ksmTook = st, took
		}
		exits0 := make([]map[string]int64, len(pids))
		for i, pid := range pids {
			exits0[i] = KVMStats(pid, KVMExitCounters)
		}
		t0, g0 := shims()
		w0 := time.Now()
		loaded, err := busyShare(idleCPUWindow)
		if err != nil {
			return s, err
		}
		// After the window: every container has idled for 12 s or more,
		// and guests have given back what they freed (free page
		// reporting).
		s.perMiB = (s.avail0 - memAvailable()) / float64(max)
		if s.perMiB > 0 {
			s.fit = s.avail0 / s.perMiB
		}
		t1, g1 := shims()
		exits := map[string]int64{}
		for i, pid := range pids {
			AddStatsDiff(exits, exits0[i], KVMStats(pid, KVMExitCounters))
		}
		if len(pids) > 0 {
			per := float64(len(pids)) * float64(time.Since(w0)) / 100
			s.shimCPU, s.shimGuest = float64(t1-t0)/per, float64(g1-g0)/per
			s.exits = FormatStats(exits, float64(len(pids))*time.Since(w0).Seconds())
		}
		// Below the baseline is noise (ticks of 10 ms over the window).
		s.cpu = 100 * (loaded - s.base) / float64(max)
		if s.cpu < 0 {
			s.cpu = 0
		}
		return s, nil
	}
	o, err := measure(ctrd.Runtime, "bench-dens-sv", false)
	if err != nil {
		return nil, err
	}
	var k side
	if ksm.Available() {
		if k, err = measure(ctrd.Runtime, "bench-dens-ksm", true); err != nil {
			return nil, fmt.Errorf("with mem_merge and KSM: %w", err)
		}
	}
	p, err := measure(runcRuntime, "bench-dens-runc", false)
	if err != nil {
		return nil, err
	}
	if o.running != max {
		return nil, fmt.Errorf("density: %d of %d stratovirt containers running", o.running, max)
	}
	var rows []Row
	for _, n := range steps {
		rows = append(rows, NewRow(fmt.Sprintf("density: ctr run -d of container %d (%d idle running), 256 MiB", n, n-1), "ms",
			[]float64{o.start[n-1]}, "runc", []float64{p.start[n-1]}))
	}
	m := NewRow(fmt.Sprintf("density: host memory per idle container (MemAvailable drop / %d)", max), "MiB",
		[]float64{o.perMiB}, "runc", []float64{p.perMiB})
	m.Note = fmt.Sprintf("%d containers running at once; at this rate %.0f idle 256 MiB microVM containers fit in the %.0f MiB available at the start (runc: %.0f)",
		o.running, o.fit, o.avail0, p.fit)
	c := NewRow(fmt.Sprintf("density: host CPU per idle container (%d idle, less none running, over %v)", max, idleCPUWindow), "% of a CPU",
		[]float64{o.cpu}, "runc", []float64{p.cpu})
	c.Note = fmt.Sprintf("each idle container's shim took %.2f%% of a CPU, of which %.2f%% running guest code (ours: the VMM is in the shim), runc's %.2f%%; "+
		"KVM exits a second per idle microVM: %s; the host's busy share (/proc/stat) was %.1f%% of a CPU before our containers started, %.1f%% before runc's",
		o.shimCPU, o.shimGuest, p.shimCPU, o.exits, 100*o.base, 100*p.base)
	rows = append(rows, m, c)
	if k.running > 0 {
		km := NewRow(fmt.Sprintf("density: host memory per idle container (MemAvailable drop / %d), mem_merge, the host's KSM on", max), "MiB",
			[]float64{k.perMiB}, "ours without mem_merge (the default)", []float64{o.perMiB})
		saved := float64(k.merged.Sharing) * float64(os.Getpagesize()) / (1 << 20)
		km.Note = fmt.Sprintf("%d containers with the mem_merge annotation; KSM (%s), turned on 2 s after the last start, settled in %v: pages_sharing %d (%.1f MiB saved, %.1f MiB a container), pages_shared %d; "+
			"host CPU per idle container with ksmd still scanning %.2f%% of a CPU (%.2f%% without); at this rate %.0f fit in the %.0f MiB available at the start",
			k.running, ksm.Settings(), k.ksmTook.Round(time.Second), k.merged.Sharing, saved, saved/float64(max), k.merged.Shared,
			k.cpu, o.cpu, k.fit, k.avail0)
		rows = append(rows, km)
	}
	return rows, nil
}
