// Command lab runs a shell command inside the nested-KVM lab VM and exits
// with its exit status. Usage:
//
//	lab [-mem MiB] [-cpus N] [-timeout D] [-out DIR] [-console] [-v] 'command'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

func main() {
	var opts lab.Options
	flag.IntVar(&opts.Memory, "mem", 4096, "lab VM memory in MiB")
	flag.IntVar(&opts.CPUs, "cpus", 2, "lab VM CPUs")
	flag.DurationVar(&opts.Timeout, "timeout", 10*time.Minute, "limit for the whole run")
	flag.StringVar(&opts.OutDir, "out", "", "host directory the command may write to (shared at the same path)")
	flag.StringVar(&opts.Dir, "C", "", "working directory inside the lab (default: the current one)")
	console := flag.Bool("console", false, "copy the lab kernel's console to stderr")
	verbose := flag.Bool("v", false, "report boot overhead and total time on stderr")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: lab [flags] 'shell command'\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	opts.Cmd = strings.Join(flag.Args(), " ")
	opts.Stdout, opts.Stderr = os.Stdout, os.Stderr
	if *console {
		opts.Console = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := lab.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, lab.ErrTimeout) {
			os.Exit(124)
		}
		os.Exit(125)
	}
	if *verbose {
		fmt.Fprintf(os.Stderr, "lab: command started %.1fs after launch; whole run %.1fs; exit %d\n",
			res.Boot.Seconds(), res.Duration.Seconds(), res.ExitCode)
	}
	os.Exit(res.ExitCode)
}
