package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
)

// FreePageReportingAnnotation turns on the balloon's free page reporting
// for one container (the daemon must list free_page_reporting in
// Options.EnableAnnotations).
const FreePageReportingAnnotation = "io.stratovirt.hypervisor.free_page_reporting=true"

// Limits of one burst measurement.
const (
	// burstTimeout bounds the burst itself: from ctr run -d returning to
	// the guest RAM holding it (ours) or the container's init being the
	// idle sleep (runc).
	burstTimeout = 2 * time.Minute
	// releaseQuiet is how long the guest RAM's RSS must hold within 1 MiB
	// before it counts as settled: longer than Linux's page reporting
	// delay (2 s), so that a guest that has not started reporting yet is
	// not read as one that finished.
	releaseQuiet = 5 * time.Second
	// releaseLimit bounds the wait for the guest to give memory back.
	releaseLimit = time.Minute
	// samplePeriod is how often memory is read during a burst.
	samplePeriod = 250 * time.Millisecond
)

// burstSide is one way of running the burst container.
type burstSide struct {
	name    string // in notes
	runtime string
	args    []string // extra ctr run arguments
}

// burstResult is what one burst left behind.
type burstResult struct {
	held memUse  // once settled
	peak float64 // guest RAM RSS (ours) or process tree PSS (runc) at its highest, MiB
}

// FreeMemRows measures what a container holds after its workload let
// memory go: its init touches burstMiB (busybox dd with one block of that
// size from /dev/zero), frees it by exiting into an idle sleep, and the
// container idles. Ours runs with the balloon's free page reporting
// (FreePageReportingAnnotation) and without it (the default); the peer
// is runc, whose freed memory goes back to the host at the process's
// exit. Each run takes the three in turn on d (started with
// free_page_reporting in EnableAnnotations), guestMiB of guest RAM.
func FreeMemRows(d *ctrd.Daemon, runs, guestMiB, burstMiB int) ([]Row, error) {
	sides := []burstSide{
		{"reporting on", ctrd.Runtime, []string{"--annotation", FreePageReportingAnnotation}},
		{"reporting off", ctrd.Runtime, nil},
		{"runc", runcRuntime, nil},
	}
	res := make([][]burstResult, len(sides))
	for i := 0; i < runs; i++ {
		for s, side := range sides {
			r, err := burstOnce(d, side, fmt.Sprintf("bench-burst-%d-%d", i, s), guestMiB, burstMiB)
			if err != nil {
				return nil, fmt.Errorf("%s, run %d: %w", side.name, i+1, err)
			}
			res[s] = append(res[s], r)
		}
	}
	guest := func(rs []burstResult) []float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, r.held.GuestRSS)
		}
		return v
	}
	// Ours: the shim's tree besides guest RAM and the guest image, plus
	// the guest RAM it holds; runc: its shim and the container.
	total := func(rs []burstResult) []float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, r.held.PSS+r.held.GuestRSS)
		}
		return v
	}
	peaks := func(rs []burstResult) string {
		var p []float64
		for _, r := range rs {
			p = append(p, r.peak)
		}
		return fmt.Sprintf("%.0f", Summarize("", p).Median)
	}
	what := fmt.Sprintf("touched and freed %d MiB (%d MiB guest)", burstMiB, guestMiB)
	g := NewRow("guest RAM held after the container "+what+", free page reporting on", "MiB", guest(res[0]), "ours with reporting off (the default)", guest(res[1]))
	g.Note = fmt.Sprintf("RSS of the guest RAM mapping once it held within 1 MiB for %v; its peak during the burst (median): %s MiB with reporting on, %s MiB off; reporting hands the guest's free 2 MiB blocks back to the host about 2 s after they pile up",
		releaseQuiet, peaks(res[0]), peaks(res[1]))
	peer := "runc (shim + container process)"
	on := NewRow("host memory per container after it "+what+", shim and guest RAM, PSS, free page reporting on", "MiB", total(res[0]), peer, total(res[2]))
	on.Note = fmt.Sprintf("ours: the shim's process tree as the shimmem rows read it (the guest image apart: host page cache shared by every VM) plus the guest RAM it holds; runc's tree peaked at %s MiB PSS during the burst", peaks(res[2]))
	off := NewRow("host memory per container after it "+what+", shim and guest RAM, PSS, free page reporting off (the default)", "MiB", total(res[1]), peer, total(res[2]))
	return []Row{g, on, off}, nil
}

// burstOnce runs the burst container once, reads what it holds once it
// idles, and removes it.
func burstOnce(d *ctrd.Daemon, side burstSide, id string, guestMiB, burstMiB int) (burstResult, error) {
	script := fmt.Sprintf("dd if=/dev/zero of=/dev/null bs=%dM count=1 2>/dev/null; exec sleep 100000", burstMiB)
	args := append([]string{"run", "-d", "--runtime", side.runtime}, side.args...)
	args = append(args, ctrd.Image, id, "sh", "-c", script)
	if out, err := d.Ctr(5*time.Minute, "", args...); err != nil {
		return burstResult{}, fmt.Errorf("ctr run -d --runtime %s %s: %v: %s", side.runtime, id, err, out)
	}
	defer remove(d, id)
	pid, err := shimPID(id)
	if err != nil {
		return burstResult{}, err
	}
	guestBytes := uint64(guestMiB) << 20
	if side.runtime == runcRuntime {
		return runcBurst(pid, guestBytes)
	}
	return vmBurst(pid, guestBytes, float64(burstMiB))
}

// vmBurst waits for the guest RAM to hold the burst, then for its RSS to
// settle (held within 1 MiB for releaseQuiet).
func vmBurst(pid int, guestBytes uint64, burstMiB float64) (burstResult, error) {
	var r burstResult
	for deadline := time.Now().Add(burstTimeout); ; time.Sleep(samplePeriod) {
		m, err := treeMemory(pid, guestBytes)
		if err != nil {
			return r, err
		}
		r.peak = max(r.peak, m.GuestRSS)
		if m.GuestRSS >= burstMiB {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("guest RAM RSS %.0f MiB after %v: the %.0f MiB burst never showed", m.GuestRSS, burstTimeout, burstMiB)
		}
	}
	var ref memUse
	since := time.Now()
	for deadline := time.Now().Add(releaseLimit); ; time.Sleep(samplePeriod) {
		m, err := treeMemory(pid, guestBytes)
		if err != nil {
			return r, err
		}
		r.peak = max(r.peak, m.GuestRSS)
		if d := m.GuestRSS - ref.GuestRSS; d > 1 || d < -1 {
			ref, since = m, time.Now()
		}
		r.held = m
		if time.Since(since) >= releaseQuiet {
			return r, nil
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("guest RAM RSS still moving (%.0f MiB) after %v", m.GuestRSS, releaseLimit)
		}
	}
}

// runcBurst waits for the container's init to exec the idle sleep (dd
// done), then reads the tree as the shimmem rows do.
func runcBurst(pid int, guestBytes uint64) (burstResult, error) {
	var r burstResult
	for deadline := time.Now().Add(burstTimeout); ; time.Sleep(samplePeriod) {
		m, err := treeMemory(pid, guestBytes)
		if err != nil {
			return r, err
		}
		r.peak = max(r.peak, m.PSS)
		comms := treeComms(pid)
		if !comms["dd"] && comms["sleep"] {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the container's init did not reach sleep within %v", burstTimeout)
		}
	}
	m, err := settledMemory(pid, guestBytes)
	r.held = m
	return r, err
}

// treeComms is the set of command names in pid's process tree.
func treeComms(pid int) map[string]bool {
	comms := map[string]bool{}
	for _, p := range tree(pid) {
		if b, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(p), "comm")); err == nil {
			comms[strings.TrimSpace(string(b))] = true
		}
	}
	return comms
}
