package qmp

import "fmt"

// item is one unit of client input: a complete top-level JSON object or
// array (value), or a framing error to answer (err).
type item struct {
	value []byte
	err   string
}

// splitter cuts a byte stream into top-level JSON values the way QEMU's
// JSON streamer does, without parsing them: it tracks brace/bracket depth
// outside strings, so several values in one read and values split across
// reads both work. Bytes outside any object that are not whitespace are a
// framing error, reported once per run. A value longer than max bytes is
// reported once and then skipped up to its end, so the buffer never grows
// beyond max. Depth is bounded by max as well.
//
// It is a pure state machine over bytes: no I/O, no allocation beyond the
// current value.
type splitter struct {
	max int

	buf      []byte // current value; nil while between values
	depth    int
	inString bool
	escape   bool
	skipping bool // current value overflowed: drop its bytes
	garbage  bool // inside a run of stray bytes between values
}

func newSplitter(max int) *splitter { return &splitter{max: max} }

// feed consumes p and returns the values and errors it completes, in
// input order.
func (s *splitter) feed(p []byte) []item {
	var out []item
	for _, b := range p {
		if s.depth == 0 {
			switch b {
			case '{', '[':
				s.garbage = false
				s.depth = 1
				s.skipping = false
				s.buf = append(s.buf[:0], b)
			case ' ', '\t', '\r', '\n':
				s.garbage = false
			default:
				if !s.garbage {
					s.garbage = true
					out = append(out, item{err: fmt.Sprintf("JSON parse error, unexpected character %q outside an object", b)})
				}
			}
			continue
		}
		if !s.skipping {
			if len(s.buf) >= s.max {
				s.skipping = true
				s.buf = s.buf[:0]
				out = append(out, item{err: fmt.Sprintf("QMP input is longer than %d bytes", s.max)})
			} else {
				s.buf = append(s.buf, b)
			}
		}
		switch {
		case s.inString:
			switch {
			case s.escape:
				s.escape = false
			case b == '\\':
				s.escape = true
			case b == '"':
				s.inString = false
			}
		case b == '"':
			s.inString = true
		case b == '{' || b == '[':
			s.depth++
		case b == '}' || b == ']':
			s.depth--
			if s.depth == 0 {
				if !s.skipping {
					v := make([]byte, len(s.buf))
					copy(v, s.buf)
					out = append(out, item{value: v})
				}
				s.buf = s.buf[:0]
				s.skipping = false
			}
		}
	}
	return out
}

// pending reports how many bytes of an unfinished value are buffered.
func (s *splitter) pending() int { return len(s.buf) }
