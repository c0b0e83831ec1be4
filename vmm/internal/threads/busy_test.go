package threads

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBusy(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	tests := []struct {
		name   string
		period time.Duration // between batches
		batch  int           // events a batch
		span   time.Duration
		want   int // yields
	}{
		{"idle: one event every 20 ms", ms(20), 1, ms(200), 0},
		{"slow: one event every 2 ms", ms(2), 1, ms(200), 0},
		{"busy: one event a ms", ms(1), 1, ms(100), 20},
		{"very busy: one event every 20 µs", ms(0.02), 1, ms(100), 20},
		{"batched: 8 events every 4 ms", ms(4), 8, ms(100), 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yields := 0
			b := Busy{yield: func() { yields++ }}
			t0 := time.Unix(1000, 0)
			b.start = t0
			for at := tt.period; at <= tt.span; at += tt.period {
				b.Handled(tt.batch, t0.Add(at))
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
