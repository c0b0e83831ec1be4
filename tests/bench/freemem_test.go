package bench

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestTreeComms: runcBurst tells a finished burst by the command names in
// the shim's tree; a child of this test must show under its name, and
// leave the set once it has exited.
func TestTreeComms(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	if c := treeComms(os.Getpid()); !c["sleep"] {
		t.Errorf("tree of %d: %v, want sleep in it", os.Getpid(), c)
	}
	cmd.Process.Kill()
	cmd.Wait()
	for deadline := time.Now().Add(5 * time.Second); treeComms(os.Getpid())["sleep"]; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("sleep still in the tree after it exited and was reaped")
		}
	}
}
