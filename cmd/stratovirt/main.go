// Command stratovirt is the standalone microVM monitor with StratoVirt's
// native command line. It parses and validates the configuration, builds
// the VM with package vmm and runs it until the guest powers off or
// reboots, or the process gets SIGTERM/SIGINT.
//
// Exit status: 0 when the guest powered off or rebooted or the VM was
// stopped by a signal; 1 for invalid options or a VM failure (triple
// fault, KVM error); (v<<1)|1 when the guest wrote v to the 0xf4
// debug-exit port, as QEMU's isa-debug-exit does.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm"
	"github.com/stratovirt-go/stratovirt/vmm/config/cmdline"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "2.4.0-go"

func main() { os.Exit(run(os.Args[1:], time.Now())) }

func run(args []string, created time.Time) int {
	if err := setupLogging(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, action, err := cmdline.Parse(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch action {
	case cmdline.ShowHelp:
		fmt.Print(cmdline.Usage())
		return 0
	case cmdline.ShowVersion:
		fmt.Println(cmdline.Version(version))
		return 0
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Daemon, log, pid file, then QMP and seccomp around Start (process.go).
	proc, exit, code := newProcess(&cfg)
	if exit {
		return code
	}
	defer proc.cleanup()
	stopProfile, err := startCPUProfile(os.Getenv(envCPUProfile), cfg.Process.DisableSeccomp)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: %v\n", err)
		return 1
	}
	defer stopProfile()

	exitCode := 0
	opts := vmm.Options{
		Created:      created,
		OnDebugExit:  func(value uint8) { exitCode = int(value)<<1 | 1 },
		OnVCPUThread: proc.vcpuHook(),
	}
	var restoreTTY func()
	if cfg.Serial.Stdio {
		opts.SerialOut = os.Stdout
		restoreTTY = makeRaw(int(os.Stdin.Fd()))
		defer restoreTTY()
	}
	vm, err := vmm.New(&cfg, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: %v\n", err)
		return 1
	}
	defer vm.Close()
	if err := proc.beforeStart(vm); err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: %v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	if err := vm.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: %v\n", err)
		return 1
	}
	context.AfterFunc(ctx, func() { vm.Stop(vmm.Stopped) })
	proc.afterStart()
	if cfg.Serial.Stdio {
		go feedSerial(vm, os.Stdin)
	}
	reason, err := vm.Wait()
	proc.finish(reason, ctx.Err() != nil)
	log.L.Debugf("vm ended: %s", reason)
	if err != nil || reason == vmm.Error {
		fmt.Fprintf(os.Stderr, "stratovirt: vm failed: %v\n", err)
		return 1
	}
	return exitCode
}

// setupLogging sends logs to stderr at STRATOVIRT_LOG_LEVEL (default warn).
func setupLogging() error {
	level := os.Getenv("STRATOVIRT_LOG_LEVEL")
	if level == "" {
		level = "warn"
	}
	if err := log.SetLevel(level); err != nil {
		return fmt.Errorf("STRATOVIRT_LOG_LEVEL: %w", err)
	}
	log.L.Logger.SetOutput(os.Stderr)
	return nil
}

// feedSerial copies host input to the guest UART, waiting while its
// receive FIFO is full rather than dropping keystrokes.
func feedSerial(vm *vmm.VM, in io.Reader) {
	buf := make([]byte, 256)
	for {
		n, err := in.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			k := vm.SerialInput(p)
			p = p[k:]
			if k == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.L.WithError(err).Debug("serial input ended")
			}
			return
		}
	}
}

// makeRaw puts a terminal on fd into raw mode, so keystrokes (Ctrl-C
// included) go to the guest, and returns the function that restores it.
// It does nothing when fd is not a terminal.
func makeRaw(fd int) func() {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return func() {}
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
}
