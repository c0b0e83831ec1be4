package container

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/stratovirt-go/stratovirt/agent/cgroups"
)

// guestCounters are guest kernel counts that tell what an operation cost
// besides its time: interrupts by source (/proc/interrupts, summed over
// CPUs), page events (/proc/vmstat) and where kernel memory grew
// (/proc/meminfo). The agent reads them around a container create at
// debug level only: in the nested lab an interrupt or a fresh page is
// dear, and a create's time alone does not say which.
type guestCounters map[string]uint64

// vmstatKeys are the /proc/vmstat lines kept; pgalloc_* are summed.
var vmstatKeys = map[string]bool{"pgfault": true, "pgmajfault": true, "pgfree": true}

// meminfoKeys are the /proc/meminfo lines kept: kernel memory that a
// create can grow for good (a percpu chunk's map is vmalloc'd; thirty-
// second session). They are levels, not counts; diff shows their growth.
var meminfoKeys = map[string]bool{"VmallocUsed": true, "Percpu": true, "Slab": true, "KernelStack": true, "PageTables": true}

// readGuestCounters reads the three files; a file it cannot read is left
// out.
func readGuestCounters() guestCounters {
	c := guestCounters{}
	if b, err := os.ReadFile("/proc/interrupts"); err == nil {
		c.addInterrupts(b)
	}
	if b, err := os.ReadFile("/proc/vmstat"); err == nil {
		c.addVMStat(b)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		c.addMeminfo(b)
	}
	return c
}

// addMeminfo adds the meminfoKeys lines ("Percpu:  1234 kB") as
// "Percpu kB"; malformed lines are skipped.
func (c guestCounters) addMeminfo(b []byte) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[2] != "kB" || !meminfoKeys[strings.TrimSuffix(f[0], ":")] {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			c[strings.TrimSuffix(f[0], ":")+" kB"] = v
		}
	}
}

// addInterrupts adds each row of a /proc/interrupts listing under the
// row's name: the device for a numbered line ("irq 5 virtio0"), the
// label otherwise ("LOC"). The header's CPU columns say how many counts
// a row has; malformed rows are skipped.
func (c guestCounters) addInterrupts(b []byte) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	cpus := -1
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if cpus < 0 {
			cpus = len(f)
			continue
		}
		if len(f) < 2 || !strings.HasSuffix(f[0], ":") {
			continue
		}
		label := strings.TrimSuffix(f[0], ":")
		var sum uint64
		n := 0
		for _, s := range f[1:] {
			if n == cpus {
				break
			}
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				break
			}
			sum += v
			n++
		}
		if n == 0 {
			continue // ERR:, MIS: have one count; a row without any is not a counter
		}
		name := label
		if _, err := strconv.Atoi(label); err == nil {
			name = "irq " + label
			if rest := f[1+n:]; len(rest) > 0 {
				name += " " + rest[len(rest)-1]
			}
		}
		c[name] += sum
	}
}

// addVMStat adds the vmstatKeys lines, and the pgalloc_* lines as one
// "pgalloc" (/proc/vmstat is flat-keyed, as cgroup stat files are).
func (c guestCounters) addVMStat(b []byte) {
	for k, n := range cgroups.ParseFlatKeyed(b) {
		switch {
		case vmstatKeys[k]:
			c[k] += n
		case strings.HasPrefix(k, "pgalloc_"):
			c["pgalloc"] += n
		}
	}
}

// diff lists the counters that grew from c to later, largest first.
func (c guestCounters) diff(later guestCounters) string {
	type moved struct {
		name string
		by   uint64
	}
	var ms []moved
	for k, v := range later {
		if v > c[k] {
			ms = append(ms, moved{k, v - c[k]})
		}
	}
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].by != ms[j].by {
			return ms[i].by > ms[j].by
		}
		return ms[i].name < ms[j].name
	})
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s +%d", m.name, m.by)
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}
