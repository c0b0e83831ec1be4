// Command runcnopivot is a test-only runc wrapper for the e2e guest image:
// it runs /usr/bin/runc.real with --no-pivot added to "create" and "run",
// because the agent runs containers from the initramfs, where
// pivot_root(2) fails with EINVAL (the agent should do this itself; see
// docs/shim.md).
package main

import (
	"os"
	"syscall"
)

func main() {
	args := []string{"runc"}
	for _, a := range os.Args[1:] {
		args = append(args, a)
		if a == "create" || a == "run" {
			args = append(args, "--no-pivot")
		}
	}
	err := syscall.Exec("/usr/bin/runc.real", args, os.Environ())
	os.Stderr.WriteString("runcnopivot: " + err.Error() + "\n")
	os.Exit(127)
}
