//go:build seccomptest

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// Test builds only (go build -tags seccomptest): STRATOVIRT_TEST_SECCOMP
// makes the VMM break its own seccomp filters once they are on, to prove
// that a forbidden syscall kills it.
//
//	main: getppid on the main goroutine after the process filter
//	vcpu: openat on vCPU 0's thread after the vCPU filter (allowed by the
//	      process filter, not by the vCPU one)
func init() {
	switch os.Getenv("STRATOVIRT_TEST_SECCOMP") {
	case "main":
		testHookAfterSeccomp = func() {
			unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
			os.Stderr.WriteString("stratovirt: survived a forbidden syscall\n")
		}
	case "vcpu":
		testHookVCPU = func(id int) {
			if id != 0 {
				return
			}
			if f, err := os.Open(os.DevNull); err == nil {
				f.Close()
			}
			os.Stderr.WriteString("stratovirt: survived open on a vCPU thread\n")
		}
	}
}
