package initsys

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Initcall is one initcall_debug record from the kernel log.
type Initcall struct {
	Name string
	Usec int64
	// At is the kernel time (µs) the call returned.
	At int64
}

var initcallRE = regexp.MustCompile(`^initcall ([^ ]+) returned -?\d+ after (\d+) usecs`)

// ParseInitcalls returns the initcall_debug records among kernel log
// records in /dev/kmsg form ("prio,seq,usec,flags;text"), slowest first.
func ParseInitcalls(records []string) []Initcall {
	var calls []Initcall
	for _, r := range records {
		head, text, ok := strings.Cut(r, ";")
		if !ok {
			continue
		}
		f := strings.SplitN(head, ",", 4)
		if len(f) < 3 {
			continue
		}
		at, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			continue
		}
		text, _, _ = strings.Cut(text, "\n")
		if m := initcallRE.FindStringSubmatch(text); m != nil {
			us, _ := strconv.ParseInt(m[2], 10, 64)
			name, _, _ := strings.Cut(m[1], "+")
			calls = append(calls, Initcall{Name: name, Usec: us, At: at})
		}
	}
	sort.SliceStable(calls, func(i, j int) bool { return calls[i].Usec > calls[j].Usec })
	return calls
}

// BootProfile summarises the kernel's initcalls when the kernel was booted
// with initcall_debug: their count, their total time and the n slowest.
// It reads what /dev/kmsg holds without waiting, so a quiet console is
// enough to see where a boot went. "" without initcall_debug records.
func BootProfile(n int) string {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	// One record per read; EAGAIN ends the log, EPIPE means records
	// were overwritten meanwhile (skip ahead). Raw reads: an os.File
	// would wait in the poller at EAGAIN instead of returning.
	var records []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		records = append(records, string(buf[:n]))
	}
	calls := ParseInitcalls(records)
	if len(calls) == 0 {
		return ""
	}
	var total int64
	for _, c := range calls {
		total += c.Usec
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d initcalls took %d ms; slowest:", len(calls), total/1000)
	for i, c := range calls {
		if i == n {
			break
		}
		fmt.Fprintf(&b, " %s %d ms (done at %d ms);", c.Name, c.Usec/1000, c.At/1000)
	}
	return strings.TrimSuffix(b.String(), ";")
}
