// Package ksm runs the host kernel's same-page merging (KSM) for tests
// and benchmarks of the shim's mem_merge: it turns KSM on with a given
// scan rate, waits until it has merged what it will, and puts the
// host's settings back. It changes a machine-wide setting: use it in the
// lab, not on a shared host.
package ksm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Annotation offers one container's guest RAM to KSM (the daemon must
// list mem_merge in the shim's enable_annotations).
const Annotation = "io.stratovirt.hypervisor.mem_merge=true"

const dir = "/sys/kernel/mm/ksm"

// Available reports whether the host kernel has KSM.
func Available() bool {
	_, err := os.Stat(filepath.Join(dir, "run"))
	return err == nil
}

// settings are how Start runs KSM: scanning faster than the kernel's
// default (100 pages every 20 ms) so that a few VMs settle in a minute
// or so, as an operator who wants density would set it.
var settings = [][2]string{{"pages_to_scan", "1000"}, {"sleep_millisecs", "20"}, {"run", "1"}}

// Settings names what Start sets, for reports.
func Settings() string {
	var f []string
	for _, kv := range settings {
		f = append(f, kv[0]+"="+kv[1])
	}
	return strings.Join(f, " ")
}

// Stat is what KSM reports: pages_shared (pages kept once), pages_sharing
// (the duplicates they replaced: the memory saved) and full_scans.
type Stat struct{ Shared, Sharing, FullScans int64 }

// Read reads KSM's counters (0 for one it cannot read).
func Read() Stat {
	n := func(k string) int64 {
		v, _ := readInt(filepath.Join(dir, k))
		return v
	}
	return Stat{n("pages_shared"), n("pages_sharing"), n("full_scans")}
}

// MergingPages is how many of process pid's pages KSM has merged
// (/proc/PID/ksm_merging_pages, Linux 6.1 and later; -1 where missing).
func MergingPages(pid int) int64 {
	v, err := readInt("/proc/" + strconv.Itoa(pid) + "/ksm_merging_pages")
	if err != nil {
		return -1
	}
	return v
}

// readInt reads a file that holds one decimal number.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// Start turns KSM on and waits until it has merged what it will:
// pages_sharing grew by under 1% over two full scans, or limit passed.
// stop unmerges every page and puts the settings back; Start fails if KSM
// merged nothing by limit.
func Start(limit time.Duration) (st Stat, took time.Duration, stop func(), err error) {
	var old [][2]string
	stop = func() {
		// Unmerge first (run=2), as a host that turns KSM off would.
		os.WriteFile(filepath.Join(dir, "run"), []byte("2"), 0)
		for i := len(old) - 1; i >= 0; i-- {
			os.WriteFile(filepath.Join(dir, old[i][0]), []byte(old[i][1]), 0)
		}
	}
	for _, kv := range settings {
		b, err := os.ReadFile(filepath.Join(dir, kv[0]))
		if err != nil {
			stop()
			return st, 0, nil, fmt.Errorf("ksm: %w", err)
		}
		old = append(old, [2]string{kv[0], strings.TrimSpace(string(b))})
		if err := os.WriteFile(filepath.Join(dir, kv[0]), []byte(kv[1]), 0); err != nil {
			stop()
			return st, 0, nil, fmt.Errorf("ksm %s=%s: %w", kv[0], kv[1], err)
		}
	}
	t0 := time.Now()
	last := Read()
	for time.Since(t0) < limit {
		time.Sleep(time.Second)
		st = Read()
		if st.FullScans >= last.FullScans+2 {
			if st.Sharing > 0 && float64(st.Sharing-last.Sharing) < 0.01*float64(st.Sharing) {
				return st, time.Since(t0), stop, nil
			}
			last = st
		}
	}
	if st.Sharing == 0 {
		stop()
		return st, 0, nil, errors.New("ksm merged nothing")
	}
	return st, time.Since(t0), stop, nil
}
