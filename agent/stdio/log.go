package stdio

import (
	"net"
	"sync"
)

// LogHub keeps the agent's recent log output and copies new output to the
// host's log streams. Writes never block on a slow reader: a follower
// whose queue is full loses lines (and is told so).
type LogHub struct {
	mu        sync.Mutex
	ring      []byte
	max       int
	followers map[chan []byte]struct{}
}

// NewLogHub keeps the last max bytes of output for new followers.
func NewLogHub(max int) *LogHub {
	return &LogHub{max: max, followers: map[chan []byte]struct{}{}}
}

// Write records p and queues it to every follower.
func (h *LogHub) Write(p []byte) (int, error) {
	b := append([]byte(nil), p...)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring = append(h.ring, b...)
	if len(h.ring) > h.max {
		h.ring = append([]byte(nil), h.ring[len(h.ring)-h.max:]...)
	}
	for c := range h.followers {
		select {
		case c <- b:
		default:
			select {
			case c <- []byte("[agent log: lines dropped]\n"):
			default:
			}
		}
	}
	return len(p), nil
}

// Follow writes the kept output and then new output to conn until a
// write fails.
func (h *LogHub) Follow(conn net.Conn) {
	c := make(chan []byte, 256)
	h.mu.Lock()
	backlog := append([]byte(nil), h.ring...)
	h.followers[c] = struct{}{}
	h.mu.Unlock()
	go func() {
		defer func() {
			h.mu.Lock()
			delete(h.followers, c)
			h.mu.Unlock()
			conn.Close()
		}()
		if _, err := conn.Write(backlog); err != nil {
			return
		}
		for b := range c {
			if _, err := conn.Write(b); err != nil {
				return
			}
		}
	}()
}
