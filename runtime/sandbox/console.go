package sandbox

import (
	"bytes"
	"strings"
	"sync"
)

// ConsoleLines is how many lines of the guest console a VM keeps for
// boot errors.
const ConsoleLines = 20

// maxConsoleLine bounds one kept line (a guest may print without
// newlines).
const maxConsoleLine = 512

// ConsoleRing keeps the last lines written to it (the guest's serial
// output) so that a failed boot can say what the guest printed. Write
// runs on vCPU threads under their seccomp filter: it makes no system
// call beyond what a mutex needs. Safe for concurrent use.
type ConsoleRing struct {
	mu    sync.Mutex
	lines []string // ring of complete lines
	next  int      // where the next complete line goes
	full  bool
	cur   []byte // the line being written

	watch  string // a line containing this calls onSeen
	onSeen func() // nil when nothing is watched or it was called
}

// WatchFunc calls f once a complete line containing s has been written
// (from now on; earlier lines do not count). One watch at a time: a
// second call replaces the first. f runs on the writer's thread (a vCPU's,
// under its seccomp filter) with the ring's lock held: it must not block
// or call back into the ring.
func (r *ConsoleRing) WatchFunc(s string, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watch, r.onSeen = s, f
}

// NewConsoleRing keeps the last n lines (at least 1).
func NewConsoleRing(n int) *ConsoleRing {
	return &ConsoleRing{lines: make([]string, max(n, 1))}
}

func (r *ConsoleRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range p {
		switch {
		case b == '\n':
			r.push()
		case b == '\r':
		case len(r.cur) >= maxConsoleLine:
			r.push()
			r.cur = append(r.cur, b)
		default:
			r.cur = append(r.cur, b)
		}
	}
	return len(p), nil
}

// push ends the current line. Called with r.mu held.
func (r *ConsoleRing) push() {
	if r.onSeen != nil && bytes.Contains(r.cur, []byte(r.watch)) {
		r.onSeen()
		r.onSeen = nil
	}
	r.lines[r.next] = strings.ToValidUTF8(string(r.cur), "?")
	r.cur = r.cur[:0]
	r.next++
	if r.next == len(r.lines) {
		r.next, r.full = 0, true
	}
}

// Tail returns the kept lines, oldest first, with a partial last line.
func (r *ConsoleRing) Tail() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	if r.full {
		out = append(out, r.lines[r.next:]...)
	}
	out = append(out, r.lines[:r.next]...)
	if len(r.cur) > 0 {
		out = append(out, strings.ToValidUTF8(string(r.cur), "?"))
		if len(out) > len(r.lines) {
			out = out[1:]
		}
	}
	return out
}
