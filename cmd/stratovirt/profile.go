package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// envCPUProfile names a file for a CPU profile (go tool pprof) of the
// whole run, written when the VMM exits normally (the guest powers off,
// or SIGTERM/SIGINT): for finding where the VMM's own CPU time goes.
const envCPUProfile = "STRATOVIRT_CPUPROFILE"

// startCPUProfile starts profiling into path (nothing when path is
// empty) and returns what stops it. The profiler arms per-thread timers
// (timer_create, setitimer) on every new thread, which the seccomp
// allow-list refuses, so it needs -disable-seccomp.
func startCPUProfile(path string, seccompDisabled bool) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	if !seccompDisabled {
		return nil, fmt.Errorf("%s needs -disable-seccomp: the profiler's per-thread timers are outside the seccomp allow-list", envCPUProfile)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envCPUProfile, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", envCPUProfile, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
