package runc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeInit plays runc's init on fifo: it opens it for writing (blocking
// until a reader comes), writes data unless it is empty, and closes it,
// as the exec of the container's process does.
func fakeInit(t *testing.T, fifo, data string) <-chan error {
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			done <- err
			return
		}
		if data != "" {
			_, err = f.WriteString(data)
		}
		f.Close()
		done <- err
	}()
	return done
}

// TestStartExecFifo: Start reads the exec FIFO of a created container
// (never running runc: the binary does not exist) and removes it; an init
// that died, one that wrote nothing and a cancelled start are errors, and
// no open is left blocked behind them.
func TestStartExecFifo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		init    string // what the init writes; "-": no init ever opens it
		exited  bool
		cancel  bool
		wantErr string
	}{
		{name: "started", init: "0"},
		{name: "init died first", init: "-", exited: true, wantErr: errInitDead.Error()},
		{name: "nothing written", init: "", wantErr: "already running"},
		{name: "cancelled", init: "-", cancel: true, wantErr: context.Canceled.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			r := &Runc{Binary: filepath.Join(root, "no-runc"), Root: root}
			fifo := filepath.Join(root, "c1", execFifo)
			if err := os.MkdirAll(filepath.Dir(fifo), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkfifo(fifo, 0o622); err != nil {
				t.Fatal(err)
			}
			var initDone <-chan error
			if tc.init != "-" {
				initDone = fakeInit(t, fifo, tc.init)
			}
			exited := make(chan struct{})
			if tc.exited {
				close(exited)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			err := r.Start(ctx, "c1", exited)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Lstat(fifo); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("exec FIFO left after the start: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if initDone != nil {
				if err := <-initDone; err != nil {
					t.Errorf("init: %v", err)
				}
			}
		})
	}
}

// TestStartNoFifo: without an exec FIFO (a runc of another layout, a
// container already started) Start asks runc.
func TestStartNoFifo(t *testing.T) {
	r, args := fakeRunc(t)
	if err := r.Start(context.Background(), "c1", make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if got := ranRunc(t, args); !strings.HasSuffix(got, "start c1") {
		t.Errorf("runc ran with %q, want a start of c1", got)
	}
}
