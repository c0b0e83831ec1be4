package ratelimit

import (
	"testing"
	"time"
)

func TestUnlimited(t *testing.T) {
	var b *Bucket = New(0, time.Now())
	if b != nil {
		t.Fatal("rate 0 must be unlimited (nil)")
	}
	for i := 0; i < 1000; i++ {
		if w := b.Take(time.Now()); w != 0 {
			t.Fatalf("unlimited bucket asked to wait %v", w)
		}
	}
}

// simulate runs a client that issues an operation as soon as it is
// allowed, for d, and returns how many it got.
func simulate(rate uint64, d time.Duration, opCost time.Duration) int {
	start := time.Unix(1000, 0)
	b := New(rate, start)
	now := start
	n := 0
	for now.Sub(start) < d {
		if w := b.Take(now); w != 0 {
			now = now.Add(w)
			continue
		}
		n++
		now = now.Add(opCost)
	}
	return n
}

func TestAverageRate(t *testing.T) {
	for _, tc := range []struct {
		rate uint64
		d    time.Duration
		cost time.Duration
	}{
		{200, 10 * time.Second, 0},
		{200, 10 * time.Second, 100 * time.Microsecond},
		{1, 10 * time.Second, 0},
		{7, 10 * time.Second, time.Millisecond},
		{1000, 10 * time.Second, 10 * time.Microsecond},
		{1000000, time.Second, 0},
	} {
		got := simulate(tc.rate, tc.d, tc.cost)
		want := float64(tc.rate) * tc.d.Seconds()
		burst := float64(max(tc.rate/BurstDivisor, 1))
		if float64(got) < want*0.99 || float64(got) > want+burst+1 {
			t.Errorf("rate %d over %v (op %v): %d ops, want %.0f (+ burst %.0f)", tc.rate, tc.d, tc.cost, got, want, burst)
		}
	}
}

func TestWaitAndBurst(t *testing.T) {
	now := time.Unix(0, 0)
	b := New(200, now)
	for i := 0; i < 20; i++ { // burst of rate/10
		if w := b.Take(now); w != 0 {
			t.Fatalf("op %d of the burst must pass, got wait %v", i, w)
		}
	}
	w := b.Take(now)
	if w != 5*time.Millisecond {
		t.Fatalf("empty bucket at 200/s: wait %v, want 5ms", w)
	}
	if w := b.Take(now.Add(4 * time.Millisecond)); w != time.Millisecond {
		t.Fatalf("after 4ms: wait %v, want 1ms", w)
	}
	if w := b.Take(now.Add(5 * time.Millisecond)); w != 0 {
		t.Fatalf("after 5ms: wait %v, want 0", w)
	}
	// A long idle period refills to capacity, not beyond.
	later := now.Add(time.Hour)
	n := 0
	for b.Take(later) == 0 {
		n++
	}
	if n != 20 {
		t.Fatalf("after idling: %d ops pass at once, want 20", n)
	}
	// Time going backwards does not add tokens.
	if w := b.Take(now); w == 0 {
		t.Fatal("clock going backwards refilled the bucket")
	}
}
