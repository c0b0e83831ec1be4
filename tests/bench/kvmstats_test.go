package bench

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestThreadSwitches(t *testing.T) {
	m := ThreadSwitches(os.Getpid())
	if len(m) == 0 {
		t.Fatal("no threads of this process")
	}
	for k, v := range m {
		if v < 0 {
			t.Errorf("%s: %d switches", k, v)
		}
	}
	var named bool
	for k := range m {
		if strings.HasSuffix(k, " (preempted)") {
			named = true
		}
	}
	if !named {
		t.Errorf("no involuntary counts in %v", m)
	}
}

func TestStatsDiffAndFormat(t *testing.T) {
	sum := map[string]int64{}
	AddStatsDiff(sum, map[string]int64{"exits": 10, "zzz": 1, "io_exits": 2}, map[string]int64{"exits": 30, "zzz": 5, "io_exits": 2, "new": 7})
	AddStatsDiff(sum, map[string]int64{"exits": 0}, map[string]int64{"exits": 20})
	want := map[string]int64{"exits": 40, "zzz": 4, "io_exits": 0}
	for k, v := range want {
		if sum[k] != v {
			t.Errorf("%s = %d, want %d", k, sum[k], v)
		}
	}
	if _, ok := sum["new"]; ok {
		t.Error("a counter missing before was summed")
	}
	// KVMExitCounters' order first, then by name.
	if got, want := FormatStats(sum, 4), "exits 10.0, io_exits 0.0, zzz 1.0"; got != want {
		t.Errorf("FormatStats = %q, want %q", got, want)
	}
}

func TestSignalOthers(t *testing.T) {
	var cmds []*exec.Cmd
	var procs []*os.Process
	for range 3 {
		c := exec.Command("sleep", "30")
		if err := c.Start(); err != nil {
			t.Skipf("sleep: %v", err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		cmds = append(cmds, c)
		procs = append(procs, c.Process)
	}
	if err := SignalOthers(procs, procs[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, c := range cmds {
		if i == 1 {
			continue
		}
		if err := c.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("process %d: %v, want killed", i, err)
		}
	}
	if err := procs[1].Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the kept process was signalled: %v", err)
	}
}
