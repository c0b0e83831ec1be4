package vmm

import (
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/arch/amd64"
)

func TestResidentRuns(t *testing.T) {
	for _, tc := range []struct {
		name    string
		touched []int // pages written before the call
		want    [][2]uint64
	}{
		{"none", nil, nil},
		{"all", []int{0, 1, 2, 3, 4, 5, 6, 7}, [][2]uint64{{0, 8 * amd64.PageSize}}},
		{"runs", []int{1, 2, 5}, [][2]uint64{{amd64.PageSize, 2 * amd64.PageSize}, {5 * amd64.PageSize, amd64.PageSize}}},
		{"last", []int{7}, [][2]uint64{{7 * amd64.PageSize, amd64.PageSize}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := unix.Mmap(-1, 0, 8*amd64.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Munmap(m)
			for _, p := range tc.touched {
				m[p*amd64.PageSize] = 1
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
