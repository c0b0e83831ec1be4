// Package smaps reads one field of one of this process's mappings from
// /proc/self/smaps: what tests check of guest RAM and device mappings
// (resident size, the kernel's flags).
package smaps

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Field returns the value of key ("Rss", "VmFlags", …) for the mapping
// that starts at addr, without surrounding spaces ("64 kB", "rd wr mg").
func Field(addr uintptr, key string) (string, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return "", err
	}
	defer f.Close()
	start := fmt.Sprintf("%x-", addr)
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if isHeader(line) {
			in = strings.HasPrefix(line, start)
			continue
		}
		if v, ok := strings.CutPrefix(line, key+":"); ok && in {
			return strings.TrimSpace(v), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no %s of a mapping at %#x in /proc/self/smaps", key, addr)
}

// isHeader reports whether line starts a mapping ("start-end perms …")
// rather than giving one of its fields ("Key: value").
func isHeader(line string) bool {
	rng, _, _ := strings.Cut(line, " ")
	lo, hi, ok := strings.Cut(rng, "-")
	return ok && hex(lo) && hex(hi)
}

func hex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
