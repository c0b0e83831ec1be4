package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ksm"
)

// memMerge runs three idle containers, two with the mem_merge annotation,
// turns on the lab's KSM and checks that the two VMs' guest RAM is
// merged (the guest kernel's code is the same in both) while the third
// VM's is never offered to KSM, and that KSM's stop unmerges all. It logs
// how much each VM had merged.
func memMerge(t *testing.T, d *daemon) {
	if !ksm.Available() {
		t.Skip("lab kernel without KSM")
	}
	ids := []string{"mm0", "mm1", "mm2"} // mm0 without the annotation
	pids := map[string]int{}
	for _, id := range ids {
		args := []string{"run", "-d", "--runtime", runtimeV2}
		if id != "mm0" {
			args = append(args, "--annotation", ksm.Annotation)
		}
		if out, err := d.run(120*time.Second, "", append(args, image, id, "sleep", "1000")...); err != nil {
			t.Fatalf("run -d %s: %v %s", id, err, out)
		}
		defer func() {
			d.run(30*time.Second, "", "t", "kill", "-s", "SIGKILL", id)
			d.run(60*time.Second, "", "t", "rm", "-f", id)
			d.run(30*time.Second, "", "c", "rm", id)
		}()
		// The task's pid is the shim's: the VMM runs in it.
		pids[id] = waitRunning(t, d, id)
	}
	for _, id := range ids {
		smaps, err := os.ReadFile("/proc/" + strconv.Itoa(pids[id]) + "/smaps")
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for _, l := range strings.Split(string(smaps), "\n") {
			got = got || strings.HasPrefix(l, "VmFlags:") && strings.Contains(l+" ", " mg ")
		}
		if want := id != "mm0"; got != want {
			t.Errorf("%s: a mapping marked mergeable: %v, want %v", id, got, want)
		}
	}

	st, took, stop, err := ksm.Start(2 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	merged := map[string]int64{}
	for _, id := range ids {
		merged[id] = ksm.MergingPages(pids[id])
	}
	stop()
	t.Logf("KSM (%s) settled in %v: %+v; pages merged by mm1 %d, mm2 %d, mm0 %d",
		ksm.Settings(), took.Round(time.Second), st, merged["mm1"], merged["mm2"], merged["mm0"])
	// Two guest kernels' code alone is thousands of equal pages; 4 MiB
	// each is the bar.
	const want = 1024
	if merged["mm1"] < want || merged["mm2"] < want {
		t.Errorf("the VMs with mem_merge merged %d and %d pages, want %d or more each", merged["mm1"], merged["mm2"], want)
	}
	if merged["mm0"] != 0 {
		t.Errorf("the VM without mem_merge merged %d pages", merged["mm0"])
	}
	if st := ksm.Read(); st.Sharing != 0 {
		t.Errorf("after stop, KSM still shares %d pages", st.Sharing)
	}
}
