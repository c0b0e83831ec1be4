// Package stream defines the wire format of the agent's stream port: the
// handshake that opens one standard stream of one process (or the agent's
// log) on its own connection, and the agent's one-message reply. It owns
// no state; its parsers are pure functions over bytes and are fuzzed.
//
// A connection to StreamPort starts with a header written by the host:
//
//	magic    4 bytes  "SVS1"
//	kind     1 byte   0 stdin, 1 stdout, 2 stderr, 3 agent log
//	cid_len  1 byte   container id length (0 only for the log stream)
//	cid      cid_len bytes
//	eid_len  1 byte   exec id length (0: the container's init process)
//	eid      eid_len bytes
//
// The agent answers with a reply before any data:
//
//	status   1 byte   0 accepted, 1 refused
//	msg_len  2 bytes  big endian, at most MaxMessage
//	msg      msg_len bytes of UTF-8 explaining a refusal
//
// After an accepted reply the connection carries raw bytes in one
// direction: host to guest for stdin (the host closing its write side is
// end of input), guest to host for stdout, stderr and the log (the agent
// closes the connection at end of output).
package stream

import (
	"errors"
	"fmt"
	"io"
)

// Ports of the agent's vsock listeners in the guest.
const (
	// ControlPort serves the ttrpc API.
	ControlPort = 1024
	// StreamPort serves stdio and log streams, one per connection.
	StreamPort = 1025
)

// ReadyLine is what the agent prints on its own line on the guest console
// once both ports listen. The host dials the control port when it sees
// the line instead of polling a booting guest: every refused connection
// attempt costs the guest an interrupt and the host a syscall round, and
// on a host with few CPUs the polling slows the boot it waits for. The
// line is a hint, not proof: a guest can print it at any time, so the
// host still treats a failed dial as "not yet" and keeps trying.
const ReadyLine = "stratovirt-agent: ready"

// MarkerPort is the I/O port of the VMM's boot-marker device (Firecracker's
// boot-timer port, vmm/devices/legacy.PortBootMarker). ReadyMarker is what
// the agent writes there once both ports listen, just before ReadyLine:
// the VMM sees the one-byte write at once, in a single exit, where the
// console line costs the guest two exits a byte (about 150 exits, tens of
// milliseconds in a nested lab). Like the line, it is a hint: the host
// still treats a failed dial as "not yet". A guest kernel without ioperm
// (X86_IOPL_IOPERM) gives only the line.
const (
	MarkerPort  = 0x3f0
	ReadyMarker = 0xa9
)

// Magic starts every stream header.
const Magic = "SVS1"

// Limits of the wire format.
const (
	MaxIDLen   = 128
	MaxMessage = 1024
	// MaxHeaderLen is the longest valid header.
	MaxHeaderLen = len(Magic) + 1 + 1 + MaxIDLen + 1 + MaxIDLen
)

// Kind is which stream a connection carries.
type Kind uint8

// Stream kinds.
const (
	Stdin Kind = iota
	Stdout
	Stderr
	Log
)

func (k Kind) String() string {
	switch k {
	case Stdin:
		return "stdin"
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	case Log:
		return "log"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header names the stream a connection carries.
type Header struct {
	Kind        Kind
	ContainerID string
	ExecID      string
}

// ErrShort is returned (wrapped) by ParseHeader when b holds a valid
// prefix of a header but not all of it.
var ErrShort = errors.New("stream header: short")

// ValidID reports whether s may be a container or exec id: 1 to MaxIDLen
// bytes of ASCII letters, digits, '-', '_' and '.', not starting with '.'.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// Validate checks the header's kind and ids.
func (h Header) Validate() error {
	switch h.Kind {
	case Stdin, Stdout, Stderr:
		if !ValidID(h.ContainerID) {
			return fmt.Errorf("stream header: invalid container id %q", h.ContainerID)
		}
		if h.ExecID != "" && !ValidID(h.ExecID) {
			return fmt.Errorf("stream header: invalid exec id %q", h.ExecID)
		}
	case Log:
		if h.ContainerID != "" || h.ExecID != "" {
			return errors.New("stream header: the log stream names no process")
		}
	default:
		return fmt.Errorf("stream header: unknown kind %d", uint8(h.Kind))
	}
	return nil
}

// MarshalBinary encodes a valid header.
func (h Header) MarshalBinary() ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(Magic)+3+len(h.ContainerID)+len(h.ExecID))
	b = append(b, Magic...)
	b = append(b, byte(h.Kind), byte(len(h.ContainerID)))
	b = append(b, h.ContainerID...)
	b = append(b, byte(len(h.ExecID)))
	b = append(b, h.ExecID...)
	return b, nil
}

// ParseHeader decodes the header at the start of b and returns it with
// its length. It returns an error wrapping ErrShort when b is a valid but
// incomplete prefix, and another error when b cannot start a valid header.
func ParseHeader(b []byte) (Header, int, error) {
	var h Header
	n := len(Magic)
	if len(b) < n {
		if string(b) != Magic[:len(b)] {
			return h, 0, errors.New("stream header: bad magic")
		}
		return h, 0, ErrShort
	}
	if string(b[:n]) != Magic {
		return h, 0, errors.New("stream header: bad magic")
	}
	if len(b) < n+2 {
		return h, 0, ErrShort
	}
	h.Kind = Kind(b[n])
	if h.Kind > Log {
		return h, 0, fmt.Errorf("stream header: unknown kind %d", b[n])
	}
	cl := int(b[n+1])
	if cl > MaxIDLen {
		return h, 0, fmt.Errorf("stream header: container id length %d over %d", cl, MaxIDLen)
	}
	n += 2
	if len(b) < n+cl+1 {
		return h, 0, ErrShort
	}
	h.ContainerID = string(b[n : n+cl])
	n += cl
	el := int(b[n])
	if el > MaxIDLen {
		return h, 0, fmt.Errorf("stream header: exec id length %d over %d", el, MaxIDLen)
	}
	n++
	if len(b) < n+el {
		return h, 0, ErrShort
	}
	h.ExecID = string(b[n : n+el])
	n += el
	if err := h.Validate(); err != nil {
		return Header{}, 0, err
	}
	return h, n, nil
}

// ReadHeader reads exactly one header from r (no read-ahead, so the
// stream's data stays in r).
func ReadHeader(r io.Reader) (Header, error) {
	buf := make([]byte, 0, MaxHeaderLen)
	need := len(Magic) + 2
	for {
		if need > MaxHeaderLen {
			return Header{}, errors.New("stream header: too long")
		}
		chunk := buf[len(buf):need]
		if _, err := io.ReadFull(r, chunk); err != nil {
			return Header{}, fmt.Errorf("stream header: %w", err)
		}
		buf = buf[:need]
		h, _, err := ParseHeader(buf)
		if err == nil {
			return h, nil
		}
		if !errors.Is(err, ErrShort) {
			return Header{}, err
		}
		need = nextNeed(buf)
	}
}

// nextNeed returns how many bytes of header are known to be needed once
// buf (a valid short prefix of at least magic+kind+cid_len) is read.
func nextNeed(buf []byte) int {
	n := len(Magic) + 2 + int(buf[len(Magic)+1])
	if len(buf) < n+1 {
		return n + 1
	}
	return n + 1 + int(buf[n])
}

// WriteReply sends the agent's reply: accepted when refusal is nil.
func WriteReply(w io.Writer, refusal error) error {
	b := []byte{0, 0, 0}
	if refusal != nil {
		msg := refusal.Error()
		if len(msg) > MaxMessage {
			msg = msg[:MaxMessage]
		}
		b[0] = 1
		b[1], b[2] = byte(len(msg)>>8), byte(len(msg))
		b = append(b, msg...)
	}
	_, err := w.Write(b)
	return err
}

// ErrRefused wraps the agent's reason when it refuses a stream.
var ErrRefused = errors.New("stream refused by agent")

// ReadReply reads the agent's reply; it returns an error wrapping
// ErrRefused with the agent's message when the stream was refused.
func ReadReply(r io.Reader) error {
	var b [3]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("stream reply: %w", err)
	}
	return parseReply(b, r)
}

func parseReply(b [3]byte, r io.Reader) error {
	n := int(b[1])<<8 | int(b[2])
	switch b[0] {
	case 0:
		if n != 0 {
			return errors.New("stream reply: message on an accepted stream")
		}
		return nil
	case 1:
	default:
		return fmt.Errorf("stream reply: unknown status %d", b[0])
	}
	if n > MaxMessage {
		return fmt.Errorf("stream reply: message length %d over %d", n, MaxMessage)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return fmt.Errorf("stream reply: %w", err)
	}
	return fmt.Errorf("%w: %s", ErrRefused, msg)
}
