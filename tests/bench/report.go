// Package bench measures this project against its peers (QEMU microvm,
// runc) in the same run, and reports each row as our median, the peer's
// median, their ratio, the run count and min/max, as Markdown, JSON and an
// SVG chart.
package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Series is one side of a row: its samples and their summary.
type Series struct {
	Name    string    `json:"name"`
	Samples []float64 `json:"samples"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Runs    int       `json:"runs"`
}

// Row compares us with a peer on one metric; lower is better unless
// HigherIsBetter. Peer is nil when there is no comparable peer number.
type Row struct {
	Name           string  `json:"name"`
	Unit           string  `json:"unit"`
	HigherIsBetter bool    `json:"higher_is_better"`
	Ours           Series  `json:"ours"`
	Peer           *Series `json:"peer,omitempty"`
	// Ratio is ours/peer of the medians (0 without a peer).
	Ratio float64 `json:"ratio"`
	// RatioCI90 is a 90% bootstrap interval of Ratio (ratioCI), when both
	// sides have at least ciMinRuns samples: a ratio whose interval holds
	// 1 is one the run cannot tell from parity.
	RatioCI90 *[2]float64 `json:"ratio_ci90,omitempty"`
	Note      string      `json:"note,omitempty"`
}

// Bootstrap parameters of ratioCI: resamples, the fewest samples a side
// needs, and a fixed seed, so that a report's intervals follow from its
// samples alone.
const (
	ciResamples = 4000
	ciMinRuns   = 3
	ciSeed      = 0x5eed
)

// ratioCI is a 90% percentile-bootstrap interval of median(ours) /
// median(peer). When paired and with as many samples on each side,
// sample i of each is taken as one round (the groups interleave their
// runs) and rounds are resampled whole, so that a lab that slows down for
// a while moves both sides of a round together; otherwise each side is
// resampled on its own (rows pooled from runs whose sides had unequal
// counts are not paired even when the totals match). ok is false with
// fewer than ciMinRuns samples a side, or where a resampled peer median
// is 0.
func ratioCI(ours, peer []float64, paired bool) (lo, hi float64, ok bool) {
	if len(ours) < ciMinRuns || len(peer) < ciMinRuns {
		return 0, 0, false
	}
	paired = paired && len(ours) == len(peer)
	rng := rand.New(rand.NewPCG(ciSeed, uint64(len(ours))<<32|uint64(len(peer))))
	o, p := make([]float64, len(ours)), make([]float64, len(peer))
	ratios := make([]float64, 0, ciResamples)
	for range ciResamples {
		if paired {
			for i := range o {
				j := rng.IntN(len(ours))
				o[i], p[i] = ours[j], peer[j]
			}
		} else {
			for i := range o {
				o[i] = ours[rng.IntN(len(ours))]
			}
			for i := range p {
				p[i] = peer[rng.IntN(len(peer))]
			}
		}
		pm := median(p)
		if pm == 0 {
			return 0, 0, false
		}
		ratios = append(ratios, median(o)/pm)
	}
	sort.Float64s(ratios)
	return ratios[len(ratios)*5/100], ratios[len(ratios)*95/100-1], true
}

// median sorts v in place and returns its median.
func median(v []float64) float64 {
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// Summarize fills the summary fields of s from its samples.
func Summarize(name string, samples []float64) Series {
	s := Series{Name: name, Samples: samples, Runs: len(samples)}
	if len(samples) == 0 {
		return s
	}
	sorted := append([]float64(nil), samples...)
	s.Median = median(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	return s
}

// NewRow builds a row from our samples and the peer's (nil: no peer).
func NewRow(name, unit string, ours []float64, peerName string, peer []float64) Row {
	return newRow(name, unit, ours, peerName, peer, len(ours) == len(peer))
}

func newRow(name, unit string, ours []float64, peerName string, peer []float64, paired bool) Row {
	r := Row{Name: name, Unit: unit, Ours: Summarize("stratovirt-go", ours)}
	if peer != nil {
		p := Summarize(peerName, peer)
		r.Peer = &p
		if p.Median != 0 {
			r.Ratio = r.Ours.Median / p.Median
			if lo, hi, ok := ratioCI(ours, peer, paired); ok {
				r.RatioCI90 = &[2]float64{lo, hi}
			}
		}
	}
	return r
}

// Report is a whole benchmark run.
type Report struct {
	Generated time.Time `json:"generated"`
	Where     string    `json:"where"`
	Rows      []Row     `json:"rows"`
	// Groups are the row groups that ran to their end (cmd/bench resumes
	// after them when a lab freezes).
	Groups []string `json:"groups,omitempty"`
}

// ReadReport reads the results.json Write stored in dir.
func ReadReport(dir string) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	return &r, nil
}

// Resummarize recomputes every row's summaries, ratio and interval from
// its samples (a report written before the intervals existed gets them).
func (r *Report) Resummarize() {
	for i, row := range r.Rows {
		var peerName string
		var peer []float64
		if row.Peer != nil {
			peerName, peer = row.Peer.Name, row.Peer.Samples
		}
		n := NewRow(row.Name, row.Unit, row.Ours.Samples, peerName, peer)
		n.Ours.Name, n.HigherIsBetter, n.Note = row.Ours.Name, row.HigherIsBetter, row.Note
		r.Rows[i] = n
	}
}

// Pool merges the reports of separate runs (of the same code, say) into
// one, so that a row the lab's spread leaves unranked in one run gets
// the rounds of all: each row's samples are those of every report with a
// row of that name, in the reports' order. A round's two samples stay a
// pair where every run had as many samples on each side; otherwise the
// pooled row's interval resamples each side on its own. Rows keep the
// order in which they first appear. A name whose unit, direction or peer
// differs between reports is an error: those are different measurements.
func Pool(reps []*Report) (*Report, error) {
	type pooled struct {
		row        Row
		ours, peer []float64
		paired     bool
		counts     []string
	}
	var order []string
	rows := map[string]*pooled{}
	out := &Report{}
	var wheres []string
	for _, rep := range reps {
		if rep.Generated.After(out.Generated) {
			out.Generated = rep.Generated
		}
		if !slices.Contains(wheres, rep.Where) {
			wheres = append(wheres, rep.Where)
		}
		for _, r := range rep.Rows {
			p, seen := rows[r.Name]
			if !seen {
				p = &pooled{row: r, paired: true}
				rows[r.Name] = p
				order = append(order, r.Name)
			}
			if r.Unit != p.row.Unit || r.HigherIsBetter != p.row.HigherIsBetter || (r.Peer == nil) != (p.row.Peer == nil) ||
				(r.Peer != nil && r.Peer.Name != p.row.Peer.Name) {
				return nil, fmt.Errorf("row %q: unit, direction or peer differ between the reports", r.Name)
			}
			p.ours = append(p.ours, r.Ours.Samples...)
			count := strconv.Itoa(len(r.Ours.Samples))
			if r.Peer != nil {
				p.peer = append(p.peer, r.Peer.Samples...)
				p.paired = p.paired && len(r.Ours.Samples) == len(r.Peer.Samples)
				if len(r.Peer.Samples) != len(r.Ours.Samples) {
					count += "/" + strconv.Itoa(len(r.Peer.Samples))
				}
			}
			p.counts = append(p.counts, count)
		}
	}
	for _, name := range order {
		p := rows[name]
		var peerName string
		if p.row.Peer != nil {
			peerName = p.row.Peer.Name
		}
		n := newRow(name, p.row.Unit, p.ours, peerName, p.peer, p.paired)
		n.Ours.Name, n.HigherIsBetter = p.row.Ours.Name, p.row.HigherIsBetter
		n.Note = fmt.Sprintf("pooled from %d of %d runs (samples %s)", len(p.counts), len(reps), strings.Join(p.counts, " + "))
		if p.row.Peer != nil && !p.paired {
			n.Note += "; sides not paired by round"
		}
		out.Rows = append(out.Rows, n)
	}
	out.Where = "pooled: " + strings.Join(wheres, "; ")
	return out, nil
}

// belowShown is the smallest magnitude num prints as other than 0.
const belowShown = 0.005

func num(v float64) string {
	switch {
	case math.Abs(v) < belowShown:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Markdown writes the report as a table.
func (r *Report) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Benchmarks, %s, %s\n\n", r.Where, r.Generated.UTC().Format(time.RFC3339))
	b.WriteString("| benchmark | unit | ours (median) | peer | peer (median) | ratio | ratio, 90% interval | runs | ours min/max | peer min/max |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		peer, pm, ratio, ci, pmm := "—", "—", "—", "—", "—"
		if row.Peer != nil {
			peer, pm = row.Peer.Name, num(row.Peer.Median)
			// No ratio to a peer median that prints as 0 (runc's idle
			// CPU): it would only say how small the peer's noise was.
			if row.Ratio != 0 && math.Abs(row.Peer.Median) >= belowShown {
				ratio = fmt.Sprintf("%.2f×", row.Ratio)
				if c := row.RatioCI90; c != nil {
					ci = fmt.Sprintf("%.2f–%.2f", c[0], c[1])
				}
			}
			pmm = num(row.Peer.Min) + " / " + num(row.Peer.Max)
		}
		runs := fmt.Sprint(row.Ours.Runs)
		if row.Peer != nil {
			runs += " / " + fmt.Sprint(row.Peer.Runs)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.Name, row.Unit, num(row.Ours.Median),
			peer, pm, ratio, ci, runs, num(row.Ours.Min)+" / "+num(row.Ours.Max), pmm)
	}
	for _, row := range r.Rows {
		if row.Note != "" {
			fmt.Fprintf(&b, "\n- %s: %s", row.Name, row.Note)
		}
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// SVG writes a bar chart: per row, our median and the peer's, scaled to
// the larger of the two.
func (r *Report) SVG(w io.Writer) error {
	const rowH, barH, left, width = 46, 16, 330, 420
	h := 40 + rowH*len(r.Rows)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`, left+width+120, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">stratovirt-go (blue) vs peer (grey), medians; %s</text>`, html.EscapeString(r.Where))
	for i, row := range r.Rows {
		y := 36 + i*rowH
		max := row.Ours.Median
		if row.Peer != nil && row.Peer.Median > max {
			max = row.Peer.Median
		}
		if max == 0 {
			max = 1
		}
		fmt.Fprintf(&b, `<text x="10" y="%d">%s (%s)</text>`, y+barH, html.EscapeString(row.Name), html.EscapeString(row.Unit))
		bw := int(float64(width) * row.Ours.Median / max)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="#2f6fdb"/><text x="%d" y="%d">%s</text>`,
			left, y+4, bw, barH, left+bw+4, y+barH, num(row.Ours.Median))
		if row.Peer != nil {
			pw := int(float64(width) * row.Peer.Median / max)
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="#999"/><text x="%d" y="%d">%s %s</text>`,
				left, y+4+barH+2, pw, barH, left+pw+4, y+2*barH+2, num(row.Peer.Median), html.EscapeString(row.Peer.Name))
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Write stores results.md, results.json and results.svg in dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, fn := range map[string]func(io.Writer) error{
		"results.md":  r.Markdown,
		"results.svg": r.SVG,
		"results.json": func(w io.Writer) error {
			e := json.NewEncoder(w)
			e.SetIndent("", "  ")
			return e.Encode(r)
		},
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// EnvRowsOut names the file a benchmark test binary writes its rows to
// (EmitRows) when cmd/bench runs it.
const EnvRowsOut = "BENCH_ROWS_OUT"

// EmitRows writes rows as JSON to $BENCH_ROWS_OUT, if set.
func EmitRows(rows []Row) error {
	p := os.Getenv(EnvRowsOut)
	if p == "" {
		return nil
	}
	b, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

// EnvRunsFile names the file a benchmark test binary keeps its finished
// runs in (SaveRuns): when the lab freezes (tests/lab ErrFrozen) and
// cmd/bench goes on in a fresh lab, the binary runs again and loads what
// it finished, so a freeze costs one run instead of the whole group. The
// file must be where a lab can write for the next one to read (cmd/bench
// puts it in its output directory).
const EnvRunsFile = "BENCH_RUNS_FILE"

// LoadRuns reads the runs saved under key into v (a pointer) and reports
// whether there were any. Without $BENCH_RUNS_FILE nothing is kept.
func LoadRuns(key string, v any) (bool, error) {
	all, err := readRuns()
	if err != nil || all[key] == nil {
		return false, err
	}
	if err := json.Unmarshal(all[key], v); err != nil {
		return false, fmt.Errorf("saved runs %q: %w", key, err)
	}
	return true, nil
}

// SaveRuns stores v (the runs finished so far) under key.
func SaveRuns(key string, v any) error {
	p := os.Getenv(EnvRunsFile)
	if p == "" {
		return nil
	}
	all, err := readRuns()
	if err != nil {
		return err
	}
	if all == nil {
		all = map[string]json.RawMessage{}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	all[key] = b
	out, err := json.Marshal(all)
	if err != nil {
		return err
	}
	// Written whole and renamed, so a lab that freezes mid-write leaves
	// the previous runs intact.
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func readRuns() (map[string]json.RawMessage, error) {
	p := os.Getenv(EnvRunsFile)
	if p == "" {
		return nil, nil
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return all, nil
}
