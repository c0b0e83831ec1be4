package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/vmm"
	"github.com/stratovirt-go/stratovirt/vmm/devices/legacy"
)

func TestConsoleRing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		writes []string
		want   []string
	}{
		{"empty", 3, nil, nil},
		{"partial", 3, []string{"abc"}, []string{"abc"}},
		{"lines", 3, []string{"a\nb\r\n", "c"}, []string{"a", "b", "c"}},
		{"wraps", 2, []string{"1\n2\n3\n4\n"}, []string{"3", "4"}},
		{"wraps with partial", 2, []string{"1\n2\n3\n", "4"}, []string{"3", "4"}},
		{"split writes", 3, []string{"he", "llo\nwor", "ld\n"}, []string{"hello", "world"}},
		{"long line cut", 2, []string{strings.Repeat("x", maxConsoleLine+3) + "\n"}, []string{strings.Repeat("x", maxConsoleLine), "xxx"}},
		{"invalid utf-8", 2, []string{"a\xffb\n"}, []string{"a?b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewConsoleRing(tc.n)
			for _, w := range tc.writes {
				if n, err := r.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			got := r.Tail()
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Fatalf("Tail = %q, want %q", got, tc.want)
			}
		})
	}
}

// bootMachine is a Machine whose guest never answers: it either ends by
// itself (endErr, after printing console) or runs until stopped.
type bootMachine struct {
	console *ConsoleRing
	end     bool
	endErr  error
	done    chan struct{}
	once    sync.Once
}

func (m *bootMachine) Start() error {
	m.console.Write([]byte("Linux version 6.1\nKernel panic - not syncing: VFS: Unable to mount root fs\n"))
	if m.end {
		go m.Stop()
	}
	return nil
}
func (m *bootMachine) Wait() error           { <-m.done; return m.endErr }
func (m *bootMachine) Stop()                 { m.once.Do(func() { close(m.done) }) }
func (m *bootMachine) Pause() error          { return nil }
func (m *bootMachine) Resume() error         { return nil }
func (m *bootMachine) Close() error          { return nil }
func (m *bootMachine) ConsoleTail() []string { return m.console.Tail() }
func (m *bootMachine) Dial(context.Context, uint32) (net.Conn, error) {
	return nil, errors.New("connection reset")
}

// TestBootErrorSaysWhy: a boot that fails carries why the VM ended and
// the guest console's last lines.
func TestBootErrorSaysWhy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		end   bool
		err   error
		wants []string
	}{
		{"VM exits", true, errors.New("VM ended: triple fault"), []string{ErrVMGone.Error(), "the VM ended during boot: VM ended: triple fault", "Kernel panic - not syncing"}},
		{"VM powers off", true, nil, []string{"the VM powered off during boot", "Linux version 6.1"}},
		{"agent never answers", false, nil, []string{"connect to the guest agent", "deadline exceeded", "guest console, last 2 lines", "Kernel panic"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &bootMachine{console: NewConsoleRing(ConsoleLines), end: tc.end, endErr: tc.err, done: make(chan struct{})}
			_, err := Start(context.Background(), m, 200*time.Millisecond)
			if err == nil {
				t.Fatal("boot succeeded")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !tc.end && strings.Contains(err.Error(), "during boot") {
				t.Errorf("error %q says the VM ended by itself", err)
			}
		})
	}
}

// TestExplainSaysWhy: an agent call that fails after boot carries why
// the VM ended (when it ends within explainWait) and the console's last
// lines.
func TestExplainSaysWhy(t *testing.T) {
	callErr := errors.New("agent update interface eth0: ttrpc: closed")
	for _, tc := range []struct {
		name   string
		end    bool
		endErr error
		wants  []string
		not    string
	}{
		{"VM ended", true, errors.New("VM ended: triple fault"), []string{"ttrpc: closed", "; the VM ended: VM ended: triple fault", "Kernel panic"}, ""},
		{"VM still runs", false, nil, []string{"ttrpc: closed", "guest console, last 2 lines"}, "the VM ended"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &bootMachine{console: NewConsoleRing(ConsoleLines), endErr: tc.endErr, done: make(chan struct{})}
			m.Start()
			s := &Sandbox{m: m, done: make(chan struct{})}
			go func() {
				werr := m.Wait()
				s.mu.Lock()
				s.waitErr = werr
				s.mu.Unlock()
				close(s.done)
			}()
			if tc.end {
				go func() { time.Sleep(50 * time.Millisecond); m.Stop() }()
			}
			err := s.Explain(callErr)
			if !errors.Is(err, callErr) {
				t.Errorf("error %q does not wrap the call's error", err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tc.not != "" && strings.Contains(err.Error(), tc.not) {
				t.Errorf("error %q says %q", err, tc.not)
			}
			s.Stop()
		})
	}
}

func TestConsoleRingWatch(t *testing.T) {
	const marker = "agent: ready"
	for _, tc := range []struct {
		name   string
		before string // written before Watch
		after  []string
		want   bool
	}{
		{"own line", "", []string{marker + "\n"}, true},
		{"split across writes", "", []string{"agent: re", "ady\r\n"}, true},
		{"after a partial kernel line", "", []string{"[ 1.0] virtio", marker + "\n"}, true},
		{"line not ended", "", []string{marker}, false},
		{"before the watch", marker + "\n", []string{"other\n"}, false},
		{"other lines", "", []string{"agent: starting\nready\n"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewConsoleRing(4)
			r.Write([]byte(tc.before))
			seen := make(chan struct{})
			r.WatchFunc(marker, func() { close(seen) })
			for _, w := range tc.after {
				r.Write([]byte(w))
			}
			got := false
			select {
			case <-seen:
				got = true
			default:
			}
			if got != tc.want {
				t.Fatalf("watch fired: %v, want %v", got, tc.want)
			}
			r.Write([]byte(marker + " again\n")) // a second match must not close twice
		})
	}
}

func TestWatchAgentReady(t *testing.T) {
	if stream.MarkerPort != legacy.PortBootMarker {
		t.Fatalf("the agent writes its marker to port %#x, the VMM's boot marker is at %#x", stream.MarkerPort, legacy.PortBootMarker)
	}
	for _, tc := range []struct {
		name    string
		serial  bool
		marks   []uint8
		console string
		want    bool
	}{
		{"marker", true, []uint8{stream.ReadyMarker}, "", true},
		{"marker without a serial device", false, []uint8{stream.ReadyMarker}, "", true},
		{"console line", true, nil, stream.ReadyLine + " (kernel clock at start 1 ms, now 2 ms)\n", true},
		{"marker and line", true, []uint8{stream.ReadyMarker}, stream.ReadyLine + "\n", true},
		{"other markers", true, []uint8{legacy.BootCompleteMarker, 0}, "stratovirt-agent: starting\n", false},
		{"line without a serial device", false, nil, stream.ReadyLine + "\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ring := NewConsoleRing(4)
			var marked []uint8
			opts := vmm.Options{OnBootMarker: func(v uint8, _ time.Duration) { marked = append(marked, v) }}
			if tc.serial {
				opts.SerialOut = ring
			}
			ready := watchAgentReady(&opts, ring)
			for _, m := range tc.marks {
				opts.OnBootMarker(m, time.Millisecond)
			}
			if tc.serial {
				opts.SerialOut.Write([]byte(tc.console))
			}
			select {
			case <-ready:
				if !tc.want {
					t.Fatal("ready without the agent's marker or line")
				}
			default:
				if tc.want {
					t.Fatal("not ready")
				}
			}
			if !reflect.DeepEqual(marked, tc.marks) {
				t.Errorf("the caller's OnBootMarker saw %v, want %v", marked, tc.marks)
			}
		})
	}
}

// readyMachine is a Machine whose agent listens from listenAt on and
// says so on ready (if sayReady) at readyAt.
type readyMachine struct {
	bootMachine
	start             time.Time
	listenAt, readyAt time.Duration
	sayReady          bool
	ready             chan struct{}
	mu                sync.Mutex
	dials             int
}

func (m *readyMachine) Start() error {
	m.start = time.Now()
	if m.sayReady {
		time.AfterFunc(m.readyAt, func() { close(m.ready) })
	}
	return nil
}
func (m *readyMachine) AgentReady() <-chan struct{} { return m.ready }
func (m *readyMachine) Dial(context.Context, uint32) (net.Conn, error) {
	m.mu.Lock()
	m.dials++
	m.mu.Unlock()
	if time.Since(m.start) < m.listenAt {
		return nil, errors.New("connection reset")
	}
	c, _ := net.Pipe()
	return c, nil
}

// TestDialRetryPacing: with a ready signal the agent is dialed when it
// says it listens, not polled; without one (or after a false one) it is
// polled.
func TestDialRetryPacing(t *testing.T) {
	for _, tc := range []struct {
		name              string
		listenAt, readyAt time.Duration
		sayReady          bool
		maxDials          int
		within            time.Duration // connected this long after listenAt
	}{
		{"ready line", 600 * time.Millisecond, 600 * time.Millisecond, true, 4, 100 * time.Millisecond},
		{"no ready line: slow fallback polling", 600 * time.Millisecond, 0, false, 5, readyFallback + 100*time.Millisecond},
		{"early false ready line: fast polling after it", 600 * time.Millisecond, 100 * time.Millisecond, true, 80, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &readyMachine{bootMachine: bootMachine{done: make(chan struct{})}, listenAt: tc.listenAt, readyAt: tc.readyAt, sayReady: tc.sayReady, ready: make(chan struct{})}
			m.Start()
			s := &Sandbox{m: m, done: make(chan struct{})}
			c, err := s.dialRetry(context.Background(), 1024)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			took := time.Since(m.start)
			if took < tc.listenAt || took > tc.listenAt+tc.within {
				t.Errorf("connected after %v, want within %v of %v", took, tc.within, tc.listenAt)
			}
			if m.dials > tc.maxDials {
				t.Errorf("%d dials, want at most %d", m.dials, tc.maxDials)
			}
		})
	}
}
