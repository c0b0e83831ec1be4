package procs

import (
	"runtime"
	"testing"
)

func TestAddRemove(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	for i := 1; i <= 3; i++ {
		Add()
		if got := runtime.GOMAXPROCS(0); got != base+i {
			t.Errorf("after %d Add: GOMAXPROCS %d, want %d", i, got, base+i)
		}
	}
	for i := 1; i <= 3; i++ {
		Remove()
		if got := runtime.GOMAXPROCS(0); got != base+3-i {
			t.Errorf("after %d Remove: GOMAXPROCS %d, want %d", i, got, base+3-i)
		}
	}
	Remove() // unmatched: nothing to give back
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("unmatched Remove: GOMAXPROCS %d, want %d", got, base)
	}
}
