// Package cgroups reads cgroup v2 statistics of a container's cgroup
// (cpu.stat, memory.*, pids.*, io.stat) and the network counters of a
// process's network namespace. Its parsers are pure functions over file
// contents and are fuzzed; it holds no state.
package cgroups

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
)

// Root is where the agent mounts the cgroup v2 hierarchy.
const Root = "/sys/fs/cgroup"

// Dir returns the directory of a cgroup path (as in linux.cgroupsPath).
func Dir(root, path string) string {
	return filepath.Join(root, filepath.Clean("/"+path))
}

// ParseFlatKeyed parses "key value" lines (cpu.stat, memory.stat,
// memory.events). Lines that do not parse are skipped.
func ParseFlatKeyed(b []byte) map[string]uint64 {
	m := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok || k == "" {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		m[k] = n
	}
	return m
}

// ParseSingle parses a one-value file: a number or "max" (returned as 0).
func ParseSingle(b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup value %q: %w", s, err)
	}
	return n, nil
}

// ParseIOStat parses io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...".
func ParseIOStat(b []byte) []*agentv1.IOEntry {
	var out []*agentv1.IOEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		maj, min, ok := strings.Cut(f[0], ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		e := &agentv1.IOEntry{Major: uint32(ma), Minor: uint32(mi)}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				e.ReadBytes = n
			case "wbytes":
				e.WriteBytes = n
			case "rios":
				e.ReadIos = n
			case "wios":
				e.WriteIos = n
			}
		}
		out = append(out, e)
	}
	return out
}

// ParseNetDev parses /proc/net/dev, skipping the loopback interface.
func ParseNetDev(b []byte) []*agentv1.NetworkStats {
	var out []*agentv1.NetworkStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if name == "" || name == "lo" || len(f) < 16 {
			continue
		}
		var v [16]uint64
		bad := false
		for i := range v {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				bad = true
				break
			}
			v[i] = n
		}
		if bad {
			continue
		}
		out = append(out, &agentv1.NetworkStats{
			Name: name, RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11],
		})
	}
	return out
}

func readSingle(dir, name string) uint64 {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0
	}
	n, _ := ParseSingle(b)
	return n
}

func readKeyed(dir, name string) map[string]uint64 {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return map[string]uint64{}
	}
	return ParseFlatKeyed(b)
}

// OOMKills returns the oom_kill counter of memory.events in dir.
func OOMKills(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "memory.events"))
	if err != nil {
		return 0, err
	}
	return ParseFlatKeyed(b)["oom_kill"], nil
}

// Stats reads the statistics of the cgroup in dir; pid (0: none) selects
// the network namespace whose interfaces are counted.
func Stats(dir string, pid int) (*agentv1.StatsContainerResponse, error) {
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	cpu := readKeyed(dir, "cpu.stat")
	mem := readKeyed(dir, "memory.stat")
	ev := readKeyed(dir, "memory.events")
	r := &agentv1.StatsContainerResponse{
		Cpu: &agentv1.CPUStats{
			UsageUsec: cpu["usage_usec"], UserUsec: cpu["user_usec"], SystemUsec: cpu["system_usec"],
			NrPeriods: cpu["nr_periods"], NrThrottled: cpu["nr_throttled"], ThrottledUsec: cpu["throttled_usec"],
		},
		Memory: &agentv1.MemoryStats{
			UsageBytes: readSingle(dir, "memory.current"), LimitBytes: readSingle(dir, "memory.max"),
			PeakBytes: readSingle(dir, "memory.peak"), SwapUsageBytes: readSingle(dir, "memory.swap.current"),
			AnonBytes: mem["anon"], FileBytes: mem["file"],
			OomEvents: ev["oom"], OomKills: ev["oom_kill"], Stat: mem,
		},
		Pids: &agentv1.PidsStats{Current: readSingle(dir, "pids.current"), Limit: readSingle(dir, "pids.max")},
		Io:   &agentv1.IOStats{},
	}
	if b, err := os.ReadFile(filepath.Join(dir, "io.stat")); err == nil {
		r.Io.Devices = ParseIOStat(b)
	}
	if pid > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid)); err == nil {
			r.Network = ParseNetDev(b)
		}
	}
	return r, nil
}

// Pids returns the processes in the cgroup in dir and its descendants.
func Pids(dir string) ([]uint32, error) {
	var pids []uint32
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.ParseUint(f, 10, 32); err == nil {
				pids = append(pids, uint32(n))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pids of %s: %w", dir, err)
	}
	return pids, nil
}
