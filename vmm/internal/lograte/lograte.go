// Package lograte owns the limiter that keeps a repeated warning (one a
// guest can provoke, or a failure retried in a loop) from flooding the
// host's log: the first in each interval is a warning, the others go to
// debug level and are counted in the next warning.
package lograte

import (
	"fmt"
	"time"

	"github.com/containerd/log"
)

// Limiter limits one kind of warning to one per Every. Its zero value
// with Every set is ready; it is not safe for concurrent use.
type Limiter struct {
	Every time.Duration
	last  time.Time
	quiet int // held back to debug level since last
}

// Warn logs msg as a warning if Every has passed since the last one
// (saying how many were held back meanwhile), else at debug level.
func (l *Limiter) Warn(msg string) {
	now := time.Now()
	if now.Sub(l.last) < l.Every {
		l.quiet++
		log.L.Debug(msg)
		return
	}
	if l.quiet > 0 {
		msg += fmt.Sprintf(" (and %d more since the last warning)", l.quiet)
	}
	l.last, l.quiet = now, 0
	log.L.Warn(msg)
}
