// Package ratelimit owns the token bucket behind the drives' iops QoS
// option: an average rate of operations per second with a small burst.
// A Bucket is used by the one goroutine (event loop) of its device; it is
// not safe for concurrent use. Time is passed in, so it is a pure
// function of the calls made.
package ratelimit

import "time"

// BurstDivisor sets the bucket capacity to rate/BurstDivisor operations
// (at least 1): a full bucket is 100 ms of traffic. StratoVirt promises
// only the average rate ("Instantaneous burst traffic cannot be limited");
// a short burst keeps measured rates over a few seconds close to it.
const BurstDivisor = 10

// Bucket limits operations to Rate per second on average.
type Bucket struct {
	rate     uint64 // operations per second
	capacity uint64 // in nano-operations (1e9 per operation)
	tokens   uint64
	last     time.Time
}

const nano = uint64(time.Second)

// New returns a bucket for rate operations per second, starting full; rate
// 0 means unlimited and returns nil (a nil *Bucket allows everything).
func New(rate uint64, now time.Time) *Bucket {
	if rate == 0 {
		return nil
	}
	burst := max(rate/BurstDivisor, 1)
	b := &Bucket{rate: rate, capacity: burst * nano, last: now}
	b.tokens = b.capacity
	return b
}

// Rate is the configured operations per second (0 for a nil bucket).
func (b *Bucket) Rate() uint64 {
	if b == nil {
		return 0
	}
	return b.rate
}

func (b *Bucket) refill(now time.Time) {
	d := now.Sub(b.last)
	if d <= 0 {
		return
	}
	// Time to fill from empty; beyond it the bucket is simply full, which
	// also keeps the products below overflow (capacity ≤ 1e5·1e9).
	full := time.Duration(b.capacity / b.rate)
	if d >= full {
		b.tokens, b.last = b.capacity, now
		return
	}
	add := uint64(d) * b.rate // nano-operations
	b.tokens = min(b.tokens+add, b.capacity)
	b.last = now
}

// Take consumes one operation at time now if the bucket allows it and
// returns 0; otherwise it consumes nothing and returns how long to wait
// before one operation is available.
func (b *Bucket) Take(now time.Time) time.Duration {
	if b == nil {
		return 0
	}
	b.refill(now)
	if b.tokens >= nano {
		b.tokens -= nano
		return 0
	}
	missing := nano - b.tokens
	wait := time.Duration((missing + b.rate - 1) / b.rate)
	return max(wait, time.Microsecond)
}
