// Package holder is the process that holds a pod's namespaces in the
// guest in place of a pause container: the agent starts its own binary
// again with Arg as the first argument, in the new IPC, UTS and PID
// namespaces the pod's sandbox spec asks for and in the sandbox's cgroup.
// The process sets the hostname and the namespaced sysctls, reports on a
// pipe, and then sleeps: it reaps the orphans of a shared PID namespace
// (of which it is PID 1) and exits on SIGTERM or SIGINT, as pause does.
// Compared with `runc create` of the pause image, it needs no image disk
// and no runc: one fork and exec of a binary the guest already has.
//
// This package owns both ends: the arguments (Config.Args) and the
// process's main (Main).
package holder

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Arg, as the first argument of the agent's binary, runs Main.
const Arg = "sandbox-holder"

// ReportFD is the holder's descriptor for its report: closed empty once
// it is set up, or the error text before it exits 1.
const ReportFD = 3

// Config is what the holder applies in its namespaces before it sleeps.
type Config struct {
	Hostname, Domainname string
	// Sysctls maps /proc/sys file paths to values.
	Sysctls map[string]string
	// OOMScoreAdj is written to /proc/self/oom_score_adj when set.
	OOMScoreAdj *int
}

// Args returns the arguments for the agent's binary that run Main with c.
func (c Config) Args() []string {
	args := []string{Arg}
	if c.Hostname != "" {
		args = append(args, "-hostname", c.Hostname)
	}
	if c.Domainname != "" {
		args = append(args, "-domainname", c.Domainname)
	}
	if c.OOMScoreAdj != nil {
		args = append(args, "-oom-score-adj", strconv.Itoa(*c.OOMScoreAdj))
	}
	paths := make([]string, 0, len(c.Sysctls))
	for p := range c.Sysctls {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		args = append(args, "-sysctl", p+"="+c.Sysctls[p])
	}
	return args
}

// sysctlFlag collects -sysctl PATH=VALUE.
type sysctlFlag map[string]string

func (s sysctlFlag) String() string { return "" }

func (s sysctlFlag) Set(v string) error {
	p, val, ok := strings.Cut(v, "=")
	if !ok || !strings.HasPrefix(p, "/proc/sys/") || strings.Contains(p, "..") {
		return fmt.Errorf("sysctl %q: want /proc/sys/PATH=VALUE", v)
	}
	s[p] = val
	return nil
}

// Parse reads the arguments that follow Arg.
func Parse(args []string) (Config, error) {
	c := Config{Sysctls: map[string]string{}}
	fs := flag.NewFlagSet(Arg, flag.ContinueOnError)
	fs.SetOutput(nopWriter{})
	fs.StringVar(&c.Hostname, "hostname", "", "hostname of the UTS namespace")
	fs.StringVar(&c.Domainname, "domainname", "", "domain name of the UTS namespace")
	adj := fs.String("oom-score-adj", "", "oom_score_adj")
	fs.Var(sysctlFlag(c.Sysctls), "sysctl", "/proc/sys/PATH=VALUE")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *adj != "" {
		n, err := strconv.Atoi(*adj)
		if err != nil || n < -1000 || n > 1000 {
			return Config{}, fmt.Errorf("oom-score-adj %q: want -1000..1000", *adj)
		}
		c.OOMScoreAdj = &n
	}
	return c, nil
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// apply sets up the holder's namespaces as c says.
func (c Config) apply() error {
	if c.Hostname != "" {
		if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", c.Hostname, err)
		}
	}
	if c.Domainname != "" {
		if err := unix.Setdomainname([]byte(c.Domainname)); err != nil {
			return fmt.Errorf("set domain name %q: %w", c.Domainname, err)
		}
	}
	paths := make([]string, 0, len(c.Sysctls))
	for p := range c.Sysctls {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		// The IPC and UTS sysctls are those of the writer's namespaces.
		if err := os.WriteFile(p, []byte(c.Sysctls[p]), 0); err != nil {
			return fmt.Errorf("sysctl: %w", err)
		}
	}
	if c.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*c.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("oom_score_adj: %w", err)
		}
	}
	return nil
}

// Main runs the holder with the arguments that follow Arg and returns
// its exit code.
func Main(args []string) int {
	report := os.NewFile(ReportFD, "report")
	fail := func(err error) int {
		if report != nil {
			fmt.Fprintf(report, "sandbox holder: %v", err)
			report.Close()
		}
		return 1
	}
	c, err := Parse(args)
	if err != nil {
		return fail(err)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	if err := c.apply(); err != nil {
		return fail(err)
	}
	if report != nil {
		report.Close()
	}
	for s := range sigs {
		if s != unix.SIGCHLD {
			return 0
		}
		reap()
	}
	return 0
}

// reap collects every exited child: as PID 1 of a pod's shared PID
// namespace the holder inherits the pod's orphans.
func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
