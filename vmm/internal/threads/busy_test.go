package threads

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBusy(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	// every returns the times of a batch of wake-ups every period up to
	// span, gap apart within the batch.
	every := func(period, span time.Duration, batch int, gap time.Duration) (at []time.Duration) {
		for t := period; t <= span; t += period {
			for i := range batch {
				at = append(at, t+time.Duration(i)*gap)
			}
		}
		return at
	}
	tests := []struct {
		name  string
		wakes []time.Duration
		want  int // yields
	}{
		{"idle: one wake-up every 20 ms", every(ms(20), ms(200), 1, 0), 0},
		{"rare: one wake-up every 6 ms", every(ms(6), ms(200), 1, 0), 0},
		{"bursts: two wake-ups 0.1 ms apart every 20 ms", every(ms(20), ms(200), 2, ms(0.1)), 0},
		{"one wake-up every 2 ms", every(ms(2), ms(200), 1, 0), 33},
		{"one wake-up a ms", every(ms(1), ms(100), 1, 0), 20},
		{"one wake-up every 20 µs", every(ms(0.02), ms(100), 1, 0), 20},
		{"one wake-up every 4 ms", every(ms(4), ms(100), 1, 0), 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yields := 0
			b := Busy{yield: func() { yields++ }}
			t0 := time.Unix(1000, 0)
			b.start = t0
			for _, at := range tt.wakes {
				b.Woke(t0.Add(at))
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
		b.Woke(now) // opens the window
		for i := 1; i < BusyWakes; i++ {
			b.Woke(now.Add(time.Millisecond))
		}
		b.Woke(now.Add(BusyWindow)) // a busy window: yields
		done <- result{before, unix.Gettid(), b.wakes}
	}()
	r := <-done
	if r.before != r.after {
		t.Errorf("thread %d came back as %d", r.before, r.after)
	}
	if r.left != 0 {
		t.Errorf("%d wake-ups left in the window after a yield", r.left)
	}
}
