package fault

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// usage is what a container lifecycle could leak on the host side that
// outlives it: containerd's descriptors, threads and goroutines, and the
// host's mounts.
type usage struct {
	fds, threads, goroutines, mounts int
}

func (u usage) String() string {
	return fmt.Sprintf("containerd fds %d threads %d goroutines %d; host mounts %d", u.fds, u.threads, u.goroutines, u.mounts)
}

func (d *daemon) usage(t *testing.T) usage {
	t.Helper()
	pid := d.Pid()
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	out, code := d.ctr(30*time.Second, "", "pprof", "--debug-socket", d.DebugSock(), "goroutines", "--debug", "1")
	var g int
	if _, err := fmt.Sscanf(out, "goroutine profile: total %d", &g); code != 0 || err != nil {
		t.Fatalf("ctr pprof goroutines: exit %d %v %.200s", code, err, out)
	}
	return usage{fds: len(fds), threads: len(tasks), mounts: strings.Count(string(mi), "\n"), goroutines: g}
}

// settled samples usage until it stops falling (containerd ends its
// per-task goroutines asynchronously) and returns the last sample.
func (d *daemon) settled(t *testing.T, base usage) usage {
	var u usage
	for range 20 {
		u = d.usage(t)
		if u.fds <= base.fds && u.threads <= base.threads && u.goroutines <= base.goroutines && u.mounts <= base.mounts {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	return u
}

// TestLoad runs container lifecycles (ctr run --rm ... true) one after
// another and then N at once, and checks that nothing leaks: containerd's
// fds, threads and goroutines return to the baseline (small slack for
// its caches), the host's mounts are the same, and checkClean finds no
// shim, tap, mount, image, socket, loop device or cgroup. By default it
// is the CI version: 4 concurrent lifecycles only (tests/e2e's loop10
// already runs 10 in a row). LOAD=1 runs 100 sequential and 10 workers x
// 3 concurrent and checks that the time per lifecycle stays stable (mean
// of the last tenth at most twice that of the first tenth); LOAD_SEQ,
// LOAD_WORKERS and LOAD_ROUNDS override the counts; LOAD=0 skips it.
func TestLoad(t *testing.T) {
	if os.Getenv("LOAD") == "0" {
		t.Skip("LOAD=0")
	}
	seq, workers, rounds := 0, 4, 1
	full := os.Getenv("LOAD") == "1"
	if full {
		seq, workers, rounds = 100, 10, 3
	}
	for _, o := range []struct {
		env string
		v   *int
	}{{"LOAD_SEQ", &seq}, {"LOAD_WORKERS", &workers}, {"LOAD_ROUNDS", &rounds}} {
		if n, err := strconv.Atoi(os.Getenv(o.env)); err == nil && n >= 0 {
			*o.v = n
		}
	}
	d := start(t)
	if err := d.EnableDebugSocket(); err != nil {
		t.Fatal(err)
	}
	// One lifecycle first: containerd's lazily started parts (the shim
	// manager, snapshot caches) are not leaks.
	if r := wait(t, d.runAsync(nil, "warmup", "true"), 3*time.Minute); r.code != 0 {
		t.Fatalf("warm-up run: exit %d %q", r.code, r.out)
	}
	d.checkClean(t)
	base := d.settled(t, usage{})
	t.Logf("baseline: %v", base)

	if seq > 0 {
		times := make([]time.Duration, 0, seq)
		t0 := time.Now()
		for i := range seq {
			r := wait(t, d.runAsync(nil, fmt.Sprintf("seq%d", i), "true"), 3*time.Minute)
			if r.code != 0 {
				t.Fatalf("run %d: exit %d %q", i, r.code, r.out)
			}
			times = append(times, r.took)
			// Progress, so that a long run is not mistaken for a wedged
			// lab (lab.Options.IdleTimeout).
			t.Logf("sequential run %d: %v", i, r.took.Round(time.Millisecond))
		}
		t.Logf("sequential: %d lifecycles in %v, %s", seq, time.Since(t0).Round(time.Millisecond), stats(times))
		if n := len(times) / 10; full && n > 0 {
			var tenths []string
			for k := 0; k+n <= len(times); k += n {
				tenths = append(tenths, mean(times[k:k+n]).String())
			}
			t.Logf("sequential: mean per tenth: %s", strings.Join(tenths, " "))
			first, last := mean(times[:n]), mean(times[len(times)-n:])
			if last > 2*first {
				t.Errorf("time per lifecycle grew: first %d mean %v, last %d mean %v", n, first, n, last)
			}
		}
		d.checkClean(t)
		after := d.settled(t, base)
		t.Logf("after sequential: %v", after)
		checkUsage(t, base, after, 1)
	}

	t0 := time.Now()
	var mu sync.Mutex
	var ctimes []time.Duration
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				res := <-d.runAsync(nil, fmt.Sprintf("con%d-%d", w, r), "true")
				mu.Lock()
				ctimes = append(ctimes, res.took)
				mu.Unlock()
				if res.code != 0 {
					t.Errorf("concurrent run %d-%d: exit %d %q", w, r, res.code, res.out)
					return
				}
				t.Logf("concurrent run %d-%d: %v", w, r, res.took.Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	t.Logf("concurrent: %d workers x %d lifecycles in %v, %s", workers, rounds, time.Since(t0).Round(time.Millisecond), stats(ctimes))
	d.checkClean(t)
	after := d.settled(t, base)
	t.Logf("after concurrent: %v", after)
	checkUsage(t, base, after, workers)
}

// checkUsage allows containerd a little slack (a cached connection, an
// idle worker thread), not growth per container. Go never ends idle
// threads, so up to one more per concurrent worker is the high-water
// mark of parallel blocking calls, not a leak.
func checkUsage(t *testing.T, base, u usage, workers int) {
	t.Helper()
	if u.fds > base.fds+4 || u.threads > base.threads+4+workers || u.goroutines > base.goroutines+10 || u.mounts != base.mounts {
		t.Errorf("leak: baseline %v, now %v", base, u)
	}
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var s time.Duration
	for _, x := range d {
		s += x
	}
	return (s / time.Duration(len(d))).Round(time.Millisecond)
}

func stats(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("per lifecycle mean %v min %v median %v max %v", mean(s), s[0].Round(time.Millisecond),
		s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}
