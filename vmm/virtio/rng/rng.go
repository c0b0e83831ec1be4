// Package rng owns the virtio-rng (entropy) device: one request queue
// whose device-writable buffers are filled from the host's getrandom
// (crypto/rand) or from a configured file such as /dev/urandom, at most
// MaxRequest bytes per request, with an optional bytes-per-second limit.
//
// Concurrency: Activate and Reset are called by the transport and hand
// over to the event loop with eventloop.Call; the queue is processed only
// on the loop.
package rng

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Geometry and limits.
const (
	QueueSize = 256
	// MaxRequest bounds the bytes given for one request (Linux asks for
	// at most a page or so; larger buffers are filled only this far).
	MaxRequest = 64 << 10
	// MinBytesPerSec and MaxBytesPerSec bound the rate limit (as
	// StratoVirt's -rng bytes_per_sec).
	MinBytesPerSec = 64
	MaxBytesPerSec = 1000000000
)

// Config describes the device.
type Config struct {
	// File is read for entropy; empty means getrandom.
	File string
	// BytesPerSec limits the rate; 0 is unlimited.
	BytesPerSec uint64
}

// RNG is a virtio-rng device.
type RNG struct {
	cfg   Config
	loop  *eventloop.Loop
	src   io.Reader
	file  *os.File
	timer int

	// Owned by the loop while active.
	act       *virtio.Activation
	q         *virtio.Queue
	kick      int
	stopped   bool
	throttled bool
	tokens    float64
	last      time.Time
	chain     virtio.Chain
	served    uint64
}

// New builds the device; its queue will be served on loop.
func New(cfg Config, loop *eventloop.Loop) (*RNG, error) {
	if cfg.BytesPerSec != 0 && (cfg.BytesPerSec < MinBytesPerSec || cfg.BytesPerSec > MaxBytesPerSec) {
		return nil, fmt.Errorf("virtio-rng: bytes_per_sec %d out of range [%d, %d]", cfg.BytesPerSec, MinBytesPerSec, MaxBytesPerSec)
	}
	r := &RNG{cfg: cfg, loop: loop, src: rand.Reader, kick: -1, timer: -1}
	if cfg.File != "" {
		f, err := os.Open(cfg.File)
		if err != nil {
			return nil, fmt.Errorf("virtio-rng: %w", err)
		}
		r.file, r.src = f, f
	}
	t, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("virtio-rng: timerfd: %w", err)
	}
	r.timer = t
	src := cfg.File
	if src == "" {
		src = "getrandom"
	}
	log.L.Debugf("virtio-rng: source %s, %d bytes/s, loop %s", src, cfg.BytesPerSec, loop.Name())
	return r, nil
}

// Served is how many bytes the guest got (read on the loop or after
// Reset).
func (r *RNG) Served() uint64 { return r.served }

// Close resets the device and releases its file.
func (r *RNG) Close() error {
	r.Reset()
	var errs []error
	if r.file != nil {
		errs = append(errs, r.file.Close())
		r.file = nil
	}
	if r.timer >= 0 {
		errs = append(errs, unix.Close(r.timer))
		r.timer = -1
	}
	return errors.Join(errs...)
}

// DeviceID implements virtio.Device.
func (r *RNG) DeviceID() uint32 { return virtio.IDRNG }

// Features implements virtio.Device.
func (r *RNG) Features() uint64 { return 1<<virtio.FIndirectDesc | 1<<virtio.FEventIdx }

// QueueMaxSizes implements virtio.Device.
func (r *RNG) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device: there is no configuration space.
func (r *RNG) ReadConfig(offset uint64, data []byte) { clear(data) }

// WriteConfig implements virtio.Device.
func (r *RNG) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (r *RNG) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 || len(a.Kicks) != 1 {
		return fmt.Errorf("virtio-rng: %d queues, want 1", len(a.Queues))
	}
	var err error
	r.loop.Call(func() {
		r.act, r.q, r.kick = &a, a.Queues[0], a.Kicks[0]
		r.stopped, r.throttled = false, false
		r.tokens, r.last = float64(r.cfg.BytesPerSec), time.Now()
		if err = r.loop.Add(r.kick, r.onKick); err != nil {
			r.act, r.q, r.kick = nil, nil, -1
			return
		}
		if err = r.loop.Add(r.timer, r.onTimer); err != nil {
			_ = r.loop.Remove(r.kick)
			r.act, r.q, r.kick = nil, nil, -1
		}
	})
	if err != nil {
		return fmt.Errorf("virtio-rng: %w", err)
	}
	return nil
}

// Reset implements virtio.Device.
func (r *RNG) Reset() {
	r.loop.Call(func() {
		if r.act == nil {
			return
		}
		_ = r.loop.Remove(r.kick)
		_ = r.loop.Remove(r.timer)
		_ = unix.TimerfdSettime(r.timer, 0, &unix.ItimerSpec{}, nil)
		r.act, r.q, r.kick = nil, nil, -1
	})
}

func (r *RNG) onKick() {
	_ = rawsys.Drain(r.kick)
	if !r.throttled {
		r.process()
	}
}

func (r *RNG) onTimer() {
	_ = rawsys.Drain(r.timer)
	r.throttled = false
	r.process()
}

func (r *RNG) fail(err error) {
	r.stopped = true
	if r.act != nil {
		r.act.Broken(err)
	}
}

// allowance returns how many bytes may be given now (refilling the
// bucket, which holds at most one second's worth).
func (r *RNG) allowance(now time.Time) uint64 {
	if r.cfg.BytesPerSec == 0 {
		return MaxRequest
	}
	rate := float64(r.cfg.BytesPerSec)
	r.tokens = min(rate, r.tokens+now.Sub(r.last).Seconds()*rate)
	r.last = now
	return uint64(min(r.tokens, MaxRequest))
}

func (r *RNG) process() {
	if r.act == nil || r.stopped {
		return
	}
	q := r.q
	for {
		ok, err := q.Pop(&r.chain)
		if err != nil {
			r.fail(err)
			return
		}
		if !ok {
			more, err := q.ArmNotify()
			if err != nil {
				r.fail(err)
				return
			}
			if more {
				continue
			}
			break
		}
		allow := r.allowance(time.Now())
		if allow == 0 {
			q.Undo()
			r.throttled = true
			wait := time.Duration(float64(time.Second) / float64(r.cfg.BytesPerSec) * 64)
			ts := unix.NsecToTimespec(int64(wait))
			if err := unix.TimerfdSettime(r.timer, 0, &unix.ItimerSpec{Value: ts}, nil); err != nil {
				log.L.Errorf("virtio-rng: arm timer: %v", err)
				r.throttled = false
			}
			break
		}
		n, err := r.fill(allow)
		if err != nil {
			r.fail(err)
			return
		}
		if r.cfg.BytesPerSec != 0 {
			r.tokens -= float64(n)
		}
		r.served += n
		if err := q.Push(r.chain.Head, uint32(n)); err != nil {
			r.fail(err)
			return
		}
	}
	need, err := q.Flush()
	if err != nil {
		r.fail(err)
		return
	}
	if need {
		if err := r.act.Interrupt.Signal(virtio.InterruptVring); err != nil {
			log.L.Errorf("virtio-rng: %v", err)
		}
	}
}

// fill writes up to limit random bytes into the chain's writable
// buffers and returns how many.
func (r *RNG) fill(limit uint64) (uint64, error) {
	done := uint64(0)
	for _, d := range r.chain.Descs {
		if !d.Write || done == limit {
			continue
		}
		n := min(uint64(d.Len), limit-done)
		dst, err := r.act.Mem.Slice(d.Addr, n)
		if err != nil {
			return done, fmt.Errorf("%w: rng buffer: %v", virtio.ErrBroken, err)
		}
		k, err := io.ReadFull(r.src, dst)
		done += uint64(k)
		if err != nil {
			log.L.Warnf("virtio-rng: read entropy: %v", err)
			return done, nil
		}
	}
	return done, nil
}
