package runc

import (
	"bufio"
	"io"
	"os"
	"strings"
)

// RootIsInitramfs reports whether / is the kernel's initial rootfs (the
// unpacked initramfs), which pivot_root(2) refuses to move ("pivot_root .:
// invalid argument"): runc must then run with --no-pivot. A root mounted
// later (switch_root, a disk, the lab's overlay) can be pivoted and keeps
// the default.
func RootIsInitramfs() bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	return rootFSType(f) == "rootfs"
}

// rootFSType returns the filesystem type of the mount that is / in a
// mountinfo table (the last one mounted there), or "".
func rootFSType(r io.Reader) string {
	var typ string
	sc := bufio.NewScanner(io.LimitReader(r, 4<<20))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		f := strings.Fields(sc.Text())
		if len(f) < 7 || f[4] != "/" {
			continue
		}
		for i := 6; i < len(f)-1; i++ {
			if f[i] == "-" {
				typ = f[i+1]
				break
			}
		}
	}
	return typ
}
