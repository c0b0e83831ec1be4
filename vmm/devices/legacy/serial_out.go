package legacy

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/containerd/log"
)

// outLimit bounds the guest output waiting for the host writer. When it is
// reached the writing vCPU waits (back-pressure) instead of losing bytes.
const outLimit = 64 << 10

// outBuffer collects UART output and writes it to w from its own goroutine,
// which batches whatever accumulated while the previous write was running.
// mu guards buf and closed; the goroutine is the only caller of w.Write.
type outBuffer struct {
	w io.Writer

	mu     sync.Mutex
	space  sync.Cond // signalled when buf was taken by the writer or closed
	buf    []byte
	closed bool
	err    error // first write error

	kick    chan struct{} // capacity 1: "buf is not empty"
	stop    chan struct{} // closed by close
	done    chan struct{} // closed when the goroutine exits
	dropped atomic.Uint64
	once    sync.Once
}

func newOutBuffer(w io.Writer) *outBuffer {
	o := &outBuffer{
		w:    w,
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	o.space.L = &o.mu
	go o.run()
	return o
}

// put queues one byte, waiting while the buffer is full.
func (o *outBuffer) put(b byte) {
	o.mu.Lock()
	for len(o.buf) >= outLimit && !o.closed {
		o.space.Wait()
	}
	if o.closed {
		o.mu.Unlock()
		o.dropped.Add(1)
		return
	}
	o.buf = append(o.buf, b)
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *outBuffer) run() {
	defer close(o.done)
	var spare []byte
	for {
		stopping := false
		select {
		case <-o.kick:
		case <-o.stop:
			stopping = true
		}
		o.mu.Lock()
		data := o.buf
		o.buf = spare[:0]
		o.space.Broadcast()
		o.mu.Unlock()
		if len(data) > 0 {
			o.write(data)
		}
		spare = data
		if stopping {
			return
		}
	}
}

func (o *outBuffer) write(data []byte) {
	n, err := o.w.Write(data)
	if err == nil && n < len(data) {
		err = io.ErrShortWrite
	}
	if err == nil {
		return
	}
	o.dropped.Add(uint64(len(data) - n))
	o.mu.Lock()
	first := o.err == nil
	if first {
		o.err = err
	}
	o.mu.Unlock()
	if first {
		log.L.WithError(err).Warn("serial: writing guest output failed; dropping output")
	}
}

// close flushes what was queued and stops the goroutine.
func (o *outBuffer) close() error {
	o.once.Do(func() {
		o.mu.Lock()
		o.closed = true
		o.space.Broadcast()
		o.mu.Unlock()
		close(o.stop)
	})
	<-o.done
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}
