package seccomp

import "testing"

// TestListSizes pins the list sizes documented in docs/seccomp.md.
func TestListSizes(t *testing.T) {
	if n := len(VCPU(KillProcess).Rules); n != 36 {
		t.Errorf("vCPU list has %d rules; update docs/seccomp.md", n)
	}
	if n := len(Process(KillProcess).Rules); n != 76 {
		t.Errorf("process list has %d rules; update docs/seccomp.md", n)
	}
}
