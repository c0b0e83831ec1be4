package vmm

import (
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestResidentRuns(t *testing.T) {
	for _, tc := range []struct {
		name    string
		touched []int // pages written before the call
		want    [][2]uint64
	}{
		{"none", nil, nil},
		{"all", []int{0, 1, 2, 3, 4, 5, 6, 7}, [][2]uint64{{0, 8 * pageSize}}},
		{"runs", []int{1, 2, 5}, [][2]uint64{{pageSize, 2 * pageSize}, {5 * pageSize, pageSize}}},
		{"last", []int{7}, [][2]uint64{{7 * pageSize, pageSize}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := unix.Mmap(-1, 0, 8*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Munmap(m)
			for _, p := range tc.touched {
				m[p*pageSize] = 1
			}
			got, err := residentRuns(m)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("residentRuns = %v, want %v", got, tc.want)
			}
		})
	}
	if runs, err := residentRuns(nil); runs != nil || err != nil {
		t.Errorf("residentRuns(nil) = %v, %v", runs, err)
	}
}
