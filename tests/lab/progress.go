package lab

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// testMarker frames the testing package's status lines under
// -test.v=test2json.
const testMarker = "\x16"

// testProgress passes a verbose test binary's output through and follows
// which top-level tests ended and which one runs, so that a lab that
// wedges in the middle of a package can go on with the tests after the
// wedged one (reexec).
type testProgress struct {
	w io.Writer

	mu      sync.Mutex
	partial []byte
	ended   []string
	running string
	open    []string // tests and subtests started and not ended, in start order
}

func (p *testProgress) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b[:n]...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.line(string(p.partial[:i]))
		p.partial = p.partial[i+1:]
	}
	return n, err
}

// line notes "=== RUN   TestX" and "--- PASS|FAIL|SKIP: TestX (…)" of
// tests and subtests (subtests have a slash; outside test2json their
// result lines are indented).
func (p *testProgress) line(l string) {
	l = strings.TrimPrefix(l, testMarker)
	if name, ok := strings.CutPrefix(l, "=== RUN   "); ok {
		name = strings.TrimSpace(name)
		if !slices.Contains(p.open, name) {
			p.open = append(p.open, name)
		}
		if !strings.Contains(name, "/") {
			p.running = name
		}
		return
	}
	trimmed := strings.TrimLeft(l, " ")
	for _, r := range []string{"--- PASS: ", "--- FAIL: ", "--- SKIP: "} {
		if rest, ok := strings.CutPrefix(trimmed, r); ok {
			name, _, _ := strings.Cut(rest, " ")
			p.open = slices.DeleteFunc(p.open, func(o string) bool { return o == name })
			if trimmed == l && !strings.Contains(name, "/") {
				p.ended = append(p.ended, name)
				if p.running == name {
					p.running = ""
				}
			}
			return
		}
	}
}

// state returns the ended tests and the one running.
func (p *testProgress) state() ([]string, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ended), p.running
}

// closeOpen writes a result line (verdict is FAIL or SKIP) for every test
// and subtest that started and did not end, innermost first, with why
// under each, and forgets them: the lab that ran them is gone, and a test
// left without an end would read as a failure of its own. prefix is
// testMarker under -test.v=test2json; otherwise subtests' lines are
// indented as the testing package indents them.
func (p *testProgress) closeOpen(w io.Writer, prefix, verdict, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range slices.Backward(p.open) {
		indent := ""
		if prefix == "" {
			indent = strings.Repeat("    ", strings.Count(name, "/"))
		}
		fmt.Fprintf(w, "%s%s--- %s: %s (0.00s)\n%s    %s\n", prefix, indent, verdict, name, indent, why)
	}
	p.open = nil
	p.running = ""
}

// skipArgs returns args with -test.skip extended to the named top-level
// tests (anchored, so that TestA does not skip TestAB).
func skipArgs(args []string, names []string) []string {
	if len(names) == 0 {
		return args
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	skip := "^(" + strings.Join(quoted, "|") + ")$"
	out := make([]string, 0, len(args)+1)
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "-test.skip="); ok {
			if v != "" {
				skip = v + "|" + skip
			}
			continue
		}
		out = append(out, a)
	}
	return append(out, "-test.skip="+skip)
}
