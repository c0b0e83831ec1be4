package holder

import (
	"reflect"
	"testing"
)

// What the agent puts on the command line is what the holder reads back.
func TestArgsParse(t *testing.T) {
	adj := -998
	for _, c := range []Config{
		{Sysctls: map[string]string{}},
		{Hostname: "pod-1", Domainname: "example.org", OOMScoreAdj: &adj,
			Sysctls: map[string]string{"/proc/sys/kernel/shm_rmid_forced": "1", "/proc/sys/net/ipv4/ip_local_port_range": "1024 65000"}},
	} {
		args := c.Args()
		if args[0] != Arg {
			t.Fatalf("args %q do not start with %q", args, Arg)
		}
		got, err := Parse(args[1:])
		if err != nil {
			t.Fatalf("Parse(%q): %v", args, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("Parse(%q) = %+v, want %+v", args, got, c)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-sysctl", "kernel.shmmax=1"},              // not a /proc/sys path
		{"-sysctl", "/proc/sys/../../etc/passwd=x"}, // leaves /proc/sys
		{"-sysctl", "/proc/sys/kernel/shmmax"},      // no value
		{"-oom-score-adj", "1001"},
		{"-oom-score-adj", "x"},
		{"-nope"},
		{"extra"},
	} {
		if _, err := Parse(args); err == nil {
			t.Errorf("Parse(%q): no error", args)
		}
	}
}
