package threads

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBusy(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	// every returns the times of a batch every period up to span, with
	// the batch's events spread by gap.
	every := func(period, span time.Duration, batch int, gap time.Duration) (at []time.Duration) {
		for t := period; t <= span; t += period {
			for i := range batch {
				at = append(at, t+time.Duration(i)*gap)
			}
		}
		return at
	}
	tests := []struct {
		name   string
		events []time.Duration // one event each
		want   int             // yields
	}{
		{"idle: one event every 20 ms", every(ms(20), ms(200), 1, 0), 0},
		{"rare: one event every 6 ms", every(ms(6), ms(200), 1, 0), 0},
		{"bursts: two events 0.1 ms apart every 20 ms", every(ms(20), ms(200), 2, ms(0.1)), 0},
		{"one event every 2 ms", every(ms(2), ms(200), 1, 0), 33},
		{"one event a ms", every(ms(1), ms(100), 1, 0), 20},
		{"one event every 20 µs", every(ms(0.02), ms(100), 1, 0), 20},
		{"8 events at once every 4 ms", every(ms(4), ms(100), 8, 0), 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yields := 0
			b := Busy{yield: func() { yields++ }}
			t0 := time.Unix(1000, 0)
			b.start = t0
			for _, at := range tt.events {
				b.Handled(1, t0.Add(at))
			}
			if yields != tt.want {
				t.Errorf("%d yields, want %d", yields, tt.want)
			}
		})
	}
}

// TestBusyGosched yields for real on a locked thread: the goroutine must
// come back on its own thread (the loops' threads carry their names).
func TestBusyGosched(t *testing.T) {
	type result struct{ before, after, left int }
	done := make(chan result)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var b Busy
		now := time.Now()
		before := unix.Gettid()
		b.Handled(1, now)                          // opens the window
		b.Handled(BusyEvents, now.Add(BusyWindow)) // busy window: yields
		done <- result{before, unix.Gettid(), b.events}
	}()
	r := <-done
	if r.before != r.after {
		t.Errorf("thread %d came back as %d", r.before, r.after)
	}
	if r.left != 0 {
		t.Errorf("%d events left in the window after a yield", r.left)
	}
}
