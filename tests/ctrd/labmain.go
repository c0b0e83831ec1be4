package ctrd

import (
	"fmt"
	"os"
	"testing"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

// LabMain is the TestMain of a lab package that drives containerd with
// the shim. On the host (env unset) it builds the shim and the guest
// image (Build) into a temporary directory exported as env, re-runs the
// test binary in the lab (lab.Exec) and removes the directory; in the
// lab it runs the tests. It returns the exit code.
func LabMain(m *testing.M, env string) int {
	if os.Getenv(env) != "" {
		return m.Run()
	}
	root, err := lab.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab tests:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "shim-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := Build(root, dir); err != nil {
		fmt.Fprintln(os.Stderr, "lab tests:", err)
		return 1
	}
	os.Setenv(env, dir)
	return lab.Exec(m)
}
