package net

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/stratovirt-go/stratovirt/tests/bench"
)

// series are the values of one workload on one VMM, one per run.
type series []float64

func (s series) sorted() []float64 { c := slices.Clone(s); slices.Sort(c); return c }

// median of s (mean of the middle two for an even count); 0 when empty.
func (s series) median() float64 {
	c := s.sorted()
	switch n := len(c); {
	case n == 0:
		return 0
	case n%2 == 1:
		return c[n/2]
	default:
		return (c[n/2-1] + c[n/2]) / 2
	}
}

func (s series) minMax() string {
	if len(s) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f–%.1f", slices.Min(s), slices.Max(s))
}

// parseResult reads benchtool's "RESULT <kind> ..." line from out and
// returns its fields after the kind: for sink/source SIZE SECONDS MBPS,
// for rr N MEDIAN_US MIN_US MAX_US.
func parseResult(out, kind string) ([]float64, error) {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "RESULT" || f[1] != kind {
			continue
		}
		if len(f) != 5 && len(f) != 6 {
			return nil, fmt.Errorf("malformed result %q", l)
		}
		v := make([]float64, len(f)-2)
		for i, s := range f[2:] {
			x, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, fmt.Errorf("malformed result %q: %v", l, err)
			}
			v[i] = x
		}
		return v, nil
	}
	return nil, fmt.Errorf("no RESULT %s line in %q", kind, strings.TrimSpace(out))
}

// workload is one measured quantity.
type workload struct {
	key, label, unit string
	lowerBetter      bool
}

var workloads = []workload{
	{"source", "TCP guest→host", "MB/s", false},
	{"sink", "TCP host→guest", "MB/s", false},
	{"rr", "TCP 1-byte round trip", "µs", true},
}

// results holds, per VMM name, per workload key, the runs.
type results map[string]map[string]series

// rounds is how many rounds every VMM has every result of.
func (r results) rounds() int {
	n := -1
	for _, m := range r {
		for _, s := range m {
			if n < 0 || len(s) < n {
				n = len(s)
			}
		}
	}
	return max(n, 0)
}

func (r results) add(vmm, key string, v float64) {
	if r[vmm] == nil {
		r[vmm] = map[string]series{}
	}
	r[vmm][key] = append(r[vmm][key], v)
}

// pair is one of our VMMs against its peer: each backend against QEMU
// with the same data path (userspace against vhost=off, vhost-net
// against vhost=on). suffix names the backend in report rows.
type pair struct {
	ours, peer, suffix string
}

// table formats one row per workload and pair: our median, the peer's,
// the ratio ours/peer, the runs and both ranges.
func table(r results, pairs []pair) string {
	var b strings.Builder
	b.WriteString("| workload | ours | peer | ours (median) | peer (median) | ratio ours/peer | runs | ours min–max | peer min–max |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, w := range workloads {
		for _, p := range pairs {
			o, q := r[p.ours][w.key], r[p.peer][w.key]
			ratio := "-"
			if q.median() > 0 {
				ratio = fmt.Sprintf("%.2f", o.median()/q.median())
			}
			fmt.Fprintf(&b, "| %s (%s) | %s | %s | %.1f | %.1f | %s | %d/%d | %s | %s |\n",
				w.label, w.unit, p.ours, p.peer, o.median(), q.median(), ratio, len(o), len(q), o.minMax(), q.minMax())
		}
	}
	return b.String()
}

// benchRows are table's rows for cmd/bench's report.
func benchRows(r results, pairs []pair) []bench.Row {
	var rows []bench.Row
	for _, w := range workloads {
		for _, p := range pairs {
			row := bench.NewRow("virtio-net "+w.label+p.suffix, w.unit, []float64(r[p.ours][w.key]), "qemu microvm "+p.peer, []float64(r[p.peer][w.key]))
			row.HigherIsBetter = !w.lowerBetter
			rows = append(rows, row)
		}
	}
	return rows
}
