// Command containerd-shim-stratovirt-v2 is the containerd shim for the
// runtime io.containerd.stratovirt.v2: each container (or CRI pod) runs in
// a microVM built in-process by the vmm package. Wiring only; see package
// shim.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/containerd/containerd/v2/pkg/shim"

	stratoshim "github.com/stratovirt-go/stratovirt/shim"
)

func main() {
	action, id, ns := peekArgs(os.Args[1:])
	if action == "start" {
		// containerd 2.3+ sends bootstrap parameters on stdin; older
		// versions send runtime options (or nothing) and want a plain
		// address back.
		input, err := io.ReadAll(io.LimitReader(os.Stdin, 10<<20))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if !stratoshim.IsBootstrap(input, id, ns) {
			if err := stratoshim.LegacyStart(os.Args[1:], os.Stdout); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v", stratoshim.RuntimeName, err)
				os.Exit(1)
			}
			return
		}
		r, w, err := os.Pipe()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() { io.Copy(w, bytes.NewReader(input)); w.Close() }()
		os.Stdin = r
	}
	if action == "" {
		// The serving shim runs in the bundle directory (containerd and
		// our start both set it); its crash output goes to the bundle's log.
		if wd, err := os.Getwd(); err == nil {
			if err := crashToLog(wd); err != nil && !errors.Is(err, os.ErrNotExist) {
				fmt.Fprintln(os.Stderr, "crash output stays on stderr:", err)
			}
		}
	}
	stratoshim.Register(stratoshim.NewVMMachine)
	shim.RunShim(context.Background(), stratoshim.Manager{}, func(c *shim.Config) {
		// The shim waits for its own children (mkfs, logging binaries)
		// with os/exec; the VMM is in-process.
		c.NoReaper = true
		c.NoSubreaper = true
	})
}

// peekArgs finds the action, -id and -namespace without consuming the
// flags that pkg/shim parses.
func peekArgs(args []string) (action, id, ns string) {
	fs := flag.NewFlagSet("peek", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("address", "", "")
	fs.String("publish-binary", "", "")
	fs.String("bundle", "", "")
	fs.String("socket", "", "")
	fs.String("debug-socket", "", "")
	fs.Bool("debug", false, "")
	fs.Bool("v", false, "")
	fs.Bool("version", false, "")
	fs.Bool("info", false, "")
	idp := fs.String("id", "", "")
	nsp := fs.String("namespace", "", "")
	if err := fs.Parse(args); err != nil {
		return "", "", ""
	}
	return fs.Arg(0), *idp, *nsp
}
