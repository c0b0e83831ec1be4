package kvmprobe

import (
	"os"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	r, err := Probe("/dev/kvm", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe: %+v", r)
	// The payload always gets as far as its first port write, on any KVM
	// that runs code at all.
	if len(r.Output) == 0 || r.Output[0] != 'A' {
		t.Fatalf("payload output %q does not start with A", r.Output)
	}
	if r.CanBootLinux != (r.Output == wantOutput) {
		t.Fatalf("verdict %v inconsistent with output %q", r.CanBootLinux, r.Output)
	}
	// STRATOVIRT_EXPECT_KVM=linux|lab lets CI and the lab assert the verdict.
	switch os.Getenv("STRATOVIRT_EXPECT_KVM") {
	case "linux":
		if !r.CanBootLinux {
			t.Fatalf("expected a KVM that boots Linux: %s", r.Detail)
		}
	case "lab":
		if r.CanBootLinux {
			t.Fatalf("expected an emulating KVM, probe says it boots Linux")
		}
	}
}
