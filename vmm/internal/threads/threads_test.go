package threads

import (
	"runtime"
	"testing"
)

func TestAddRemoveP(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	for i := 1; i <= 3; i++ {
		AddP()
		if got := runtime.GOMAXPROCS(0); got != base+i {
			t.Errorf("after %d AddP: GOMAXPROCS %d, want %d", i, got, base+i)
		}
	}
	for i := 1; i <= 3; i++ {
		RemoveP()
		if got := runtime.GOMAXPROCS(0); got != base+3-i {
			t.Errorf("after %d RemoveP: GOMAXPROCS %d, want %d", i, got, base+3-i)
		}
	}
	RemoveP() // unmatched: nothing to give back
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("unmatched RemoveP: GOMAXPROCS %d, want %d", got, base)
	}
}
