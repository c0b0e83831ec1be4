package lab

import (
	"bytes"
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
// top-level tests (subtests are indented or have a slash).
func (p *testProgress) line(l string) {
	l = strings.TrimPrefix(l, testMarker)
	if name, ok := strings.CutPrefix(l, "=== RUN   "); ok && !strings.Contains(name, "/") {
		p.running = strings.TrimSpace(name)
		return
	}
	for _, r := range []string{"--- PASS: ", "--- FAIL: ", "--- SKIP: "} {
		if rest, ok := strings.CutPrefix(l, r); ok {
			name, _, _ := strings.Cut(rest, " ")
			if !strings.Contains(name, "/") {
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

// forget clears the running test (the lab that ran it is gone).
func (p *testProgress) forget(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running == name {
		p.running = ""
	}
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
