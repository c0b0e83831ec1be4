package shim

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/log"
)

// event is one queued publication.
type event struct {
	topic string
	ev    any
}

// eventQueue publishes events in the order they were queued, from one
// goroutine, so that TaskStart always precedes the TaskExit of the same
// process and RPCs never block on containerd.
type eventQueue struct {
	mu     sync.Mutex
	closed bool
	ch     chan event
	done   chan struct{}
}

func newEventQueue(ctx context.Context, pub publisherFunc) *eventQueue {
	q := &eventQueue{ch: make(chan event, 256), done: make(chan struct{})}
	go func() {
		defer close(q.done)
		for e := range q.ch {
			if pub == nil {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := pub.Publish(pctx, e.topic, e.ev); err != nil {
				log.G(ctx).WithError(err).Warnf("publish %s", e.topic)
			}
			cancel()
		}
	}()
	return q
}

func (q *eventQueue) send(topic string, ev any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.ch <- event{topic, ev}
	}
}

// close flushes the queue (bounded by d).
func (q *eventQueue) close(d time.Duration) {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	select {
	case <-q.done:
	case <-time.After(d):
	}
}
