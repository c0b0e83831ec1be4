package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// execFifo is the FIFO in a created container's state directory that
// runc's init opens for writing and blocks on until `runc start` reads
// it; the container counts as running once it is gone (runc 1.0 to 1.3).
const execFifo = "exec.fifo"

// errInitDead is what runc start answers for an init that died before it
// was started.
var errInitDead = errors.New("container process is already dead")

// Start starts a created container's init: it reads the exec FIFO and
// removes it, which is all `runc start` does for a created container, in
// the agent instead of in a runc process: a start of runc's 9 MB Go binary
// in the guest, without which a pod's sandbox and container each started
// 0.3–0.5 s sooner in the lab (docs/performance.md, twentieth session).
// exited is closed once the init has exited. Where the FIFO is not there
// (a runc of another layout, or a container not in the created state) it
// runs `runc start`, which gives runc's own answer.
func (r *Runc) Start(ctx context.Context, id string, exited <-chan struct{}) error {
	fifo := filepath.Join(r.Root, id, execFifo)
	if st, err := os.Lstat(fifo); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		return r.run(ctx, nil, nil, "", "start", id)
	}
	if err := readExecFifo(ctx, fifo, exited); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// readExecFifo opens fifo for reading, which lets the init's open for
// writing go on, reads what the init writes before it executes the
// container's process (its end closes on exec) and removes fifo. It gives
// up when exited is closed or ctx ends first.
func readExecFifo(ctx context.Context, fifo string, exited <-chan struct{}) error {
	type opened struct {
		f   *os.File
		err error
	}
	openc := make(chan opened, 1)
	go func() {
		// Blocks until a writer opens the other end.
		f, err := os.OpenFile(fifo, os.O_RDONLY|unix.O_CLOEXEC, 0)
		openc <- opened{f, err}
	}()
	var o opened
	var stopped error
	select {
	case o = <-openc:
	case <-exited:
		stopped = errInitDead
	case <-ctx.Done():
		stopped = ctx.Err()
	}
	for stopped != nil && o.f == nil && o.err == nil {
		// Our blocked open counts as a reader, so a non-blocking open for
		// writing succeeds and releases it. It fails while the goroutine
		// has not reached its open yet: try again.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			w.Close()
		}
		select {
		case o = <-openc:
		case <-time.After(10 * time.Millisecond):
		}
	}
	if o.err != nil {
		return fmt.Errorf("open %s: %w", fifo, o.err)
	}
	data, err := io.ReadAll(o.f)
	o.f.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", fifo, err)
	}
	if len(data) == 0 {
		// Nothing written: the init died first, or we gave up.
		if stopped != nil {
			return stopped
		}
		return errors.New("cannot start an already running container")
	}
	// The init ran its process even if we stopped waiting meanwhile.
	return os.Remove(fifo)
}
