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

// KernelRecord is one kernel log record: the kernel's local clock (µs)
// when it was logged, and the first line of its text.
type KernelRecord struct {
	At   int64
	Text string
}

// ParseKernelLog parses kernel log records in /dev/kmsg form
// ("prio,seq,usec,flags;text"), skipping malformed ones.
func ParseKernelLog(records []string) []KernelRecord {
	var out []KernelRecord
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
		out = append(out, KernelRecord{At: at, Text: text})
	}
	return out
}

// Initcall is one initcall_debug record from the kernel log.
type Initcall struct {
	Name string
	Usec int64
	// At is the kernel time (µs) the call returned.
	At int64
}

var initcallRE = regexp.MustCompile(`^initcall ([^ ]+) returned -?\d+ after (\d+) usecs`)

// ParseInitcalls returns the initcall_debug records among recs, slowest
// first.
func ParseInitcalls(recs []KernelRecord) []Initcall {
	var calls []Initcall
	for _, r := range recs {
		if m := initcallRE.FindStringSubmatch(r.Text); m != nil {
			us, _ := strconv.ParseInt(m[2], 10, 64)
			name, _, _ := strings.Cut(m[1], "+")
			calls = append(calls, Initcall{Name: name, Usec: us, At: r.At})
		}
	}
	sort.SliceStable(calls, func(i, j int) bool { return calls[i].Usec > calls[j].Usec })
	return calls
}

// LogGap is an interval in which the kernel logged nothing: Usec long,
// ending with the record Before, logged at At.
type LogGap struct {
	Usec   int64
	Before string
	At     int64
}

// LogGaps returns the n longest intervals between consecutive records,
// longest first. Where a quiet boot spends its time shows as a gap before
// the next thing the kernel logs (records go to the log whatever the
// console's level).
func LogGaps(recs []KernelRecord, n int) []LogGap {
	var gaps []LogGap
	for i := 1; i < len(recs); i++ {
		if d := recs[i].At - recs[i-1].At; d > 0 {
			gaps = append(gaps, LogGap{Usec: d, Before: recs[i].Text, At: recs[i].At})
		}
	}
	sort.SliceStable(gaps, func(i, j int) bool { return gaps[i].Usec > gaps[j].Usec })
	if len(gaps) > n {
		gaps = gaps[:n]
	}
	return gaps
}

// BootProfile summarises where the boot went from what /dev/kmsg holds,
// without waiting, so a quiet console is enough: the n longest gaps
// between kernel log records, when init was run by the log's clock and,
// when the kernel was booted with initcall_debug, the count and total
// time of its initcalls and the n slowest. "" when the log cannot be
// read.
func BootProfile(n int) string {
	return bootProfile(ParseKernelLog(readKmsg()), n)
}

func bootProfile(recs []KernelRecord, n int) string {
	if len(recs) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d kernel log records, the last at %d ms", len(recs), recs[len(recs)-1].At/1000)
	// Against the agent's own start (CLOCK_BOOTTIME, which x86 starts
	// from the log's clock), init's run shows what exec and the Go
	// runtime's start took.
	for _, r := range recs {
		if strings.HasPrefix(r.Text, "Run ") && strings.Contains(r.Text, " as init process") {
			fmt.Fprintf(&b, ", init run at %d ms", r.At/1000)
			break
		}
	}
	b.WriteString("; longest gaps:")
	for _, g := range LogGaps(recs, n) {
		text := g.Before
		if r := []rune(text); len(r) > 60 {
			text = string(r[:60]) + "…"
		}
		fmt.Fprintf(&b, " %d ms before %q (at %d ms);", g.Usec/1000, text, g.At/1000)
	}
	if calls := ParseInitcalls(recs); len(calls) > 0 {
		var total int64
		for _, c := range calls {
			total += c.Usec
		}
		fmt.Fprintf(&b, " %d initcalls took %d ms; slowest:", len(calls), total/1000)
		for i, c := range calls {
			if i == n {
				break
			}
			fmt.Fprintf(&b, " %s %d ms (done at %d ms);", c.Name, c.Usec/1000, c.At/1000)
		}
	}
	return strings.TrimSuffix(b.String(), ";")
}

// readKmsg returns the records /dev/kmsg holds now, nil if it cannot be
// opened.
func readKmsg() []string {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
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
	return records
}
