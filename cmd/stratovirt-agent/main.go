// Command stratovirt-agent is the guest agent: PID 1 of the stratovirt
// guest image. It serves the agent API (agent-proto, ttrpc) on vsock port
// 1024 and stdio/log streams on port 1025, and runs containers with runc.
// On a host (for tests) it listens on unix sockets instead:
//
//	stratovirt-agent -listen unix:///tmp/a.sock -stream-listen unix:///tmp/a.streams -state-dir /tmp/state
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/mdlayher/vsock"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/writer"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/agent/container"
	"github.com/stratovirt-go/stratovirt/agent/holder"
	"github.com/stratovirt-go/stratovirt/agent/initsys"
	"github.com/stratovirt-go/stratovirt/agent/network"
	"github.com/stratovirt-go/stratovirt/agent/reaper"
	"github.com/stratovirt-go/stratovirt/agent/runc"
	"github.com/stratovirt-go/stratovirt/agent/server"
	"github.com/stratovirt-go/stratovirt/agent/stdio"
)

type options struct {
	listen, streamListen string
	stateDir, runcPath   string
	runcVersion          string
	modules              string
	logLevel             string
	quietConsole         bool
	guest                bool
	attachWait           time.Duration
	network              bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == holder.Arg {
		os.Exit(holder.Main(os.Args[2:]))
	}
	pid1 := os.Getpid() == 1
	var o options
	flag.StringVar(&o.listen, "listen", "vsock://"+strconv.Itoa(stream.ControlPort), "ttrpc address: vsock://PORT or unix:///path")
	flag.StringVar(&o.streamListen, "stream-listen", "vsock://"+strconv.Itoa(stream.StreamPort), "stream address: vsock://PORT or unix:///path")
	flag.StringVar(&o.stateDir, "state-dir", "/run/stratovirt", "bundles, mount points and runc state")
	flag.StringVar(&o.runcPath, "runc", "runc", "runc binary")
	flag.StringVar(&o.runcVersion, "runc-version-file", "/etc/stratovirt/runc-version", "first line of `runc --version`, recorded when the guest image was built (runc is asked when the file is missing)")
	flag.StringVar(&o.modules, "modules", "/etc/stratovirt/modules", "kernel modules to load at start (PID 1)")
	flag.StringVar(&o.logLevel, "log-level", "info", "log level")
	flag.BoolVar(&o.quietConsole, "quiet-console", false, "at debug and trace level too, write only warnings and errors to the console (the log stream gets every line): a serial console slows the guest")
	flag.BoolVar(&o.guest, "guest", pid1, "apply machine-wide settings (hostname, sysctls, resolv.conf)")
	flag.DurationVar(&o.attachWait, "stream-attach-wait", 30*time.Second, "how long a stream waits for its process to be created")
	flag.BoolVar(&o.network, "network", pid1, "serve network configuration RPCs")
	flag.Parse()

	logs := stdio.NewLogHub(256 << 10)
	if err := run(o, pid1, logs); err != nil {
		log.L.Errorf("stratovirt-agent: %v", err)
		if pid1 {
			time.Sleep(time.Second)
			initsys.PowerOff()
		}
		os.Exit(1)
	}
}

// bootClock reads CLOCK_BOOTTIME: how long the guest kernel has been up.
func bootClock() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func run(o options, pid1 bool, logs *stdio.LogHub) error {
	started := bootClock()
	if pid1 {
		os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
		if err := initsys.MountBase(); err != nil {
			return err
		}
		initsys.ConsoleStdio()
	}
	logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	if err := log.SetLevel(o.logLevel); err != nil {
		return err
	}
	// The log always goes to the log stream (the shim follows it). On the
	// console, a serial port that costs the guest two port exits a byte,
	// only warnings and errors, unless the log level asks for debugging.
	if log.GetLevel() >= log.DebugLevel && !o.quietConsole {
		logrus.SetOutput(io.MultiWriter(os.Stderr, logs))
	} else {
		logrus.SetOutput(logs)
		logrus.AddHook(&writer.Hook{Writer: os.Stderr, LogLevels: []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}})
	}
	log.L.Debugf("base mounts and console at kernel clock %d ms", bootClock().Milliseconds())
	if pid1 {
		if err := initsys.LoadModules(o.modules); err != nil {
			log.L.Warnf("modules: %v", err)
		}
		// runc and its libraries come as a read-only image of their own,
		// unless / is already the root image that holds them.
		usrReady := false
		if _, err := os.Stat("/usr/bin/runc"); err == nil {
			usrReady = true
			log.L.Debugf("runc on the root image at kernel clock %d ms", bootClock().Milliseconds())
		} else if ok, waited, err := initsys.MountUsr(initsys.SysVirtio, agentv1.RuncDevice, 5*time.Second); err != nil {
			log.L.Warnf("runc image: %v", err)
		} else if ok {
			usrReady = true
			log.L.Debugf("runc image %s on /usr at kernel clock %d ms (waited %v for it)", agentv1.RuncDevice, bootClock().Milliseconds(), waited.Round(time.Microsecond))
		}
		if usrReady {
			go func() {
				t0 := time.Now()
				n, err := initsys.Prefault("/usr")
				log.L.WithError(err).Debugf("runc image: %d bytes prefaulted in %v", n, time.Since(t0).Round(time.Millisecond))
			}()
		}
		if err := initsys.EnableControllers("/sys/fs/cgroup"); err != nil {
			log.L.Warnf("cgroup controllers: %v", err)
		}
		if err := netlinkUp("lo"); err != nil {
			log.L.Warnf("loopback: %v", err)
		}
	}
	rp, err := reaper.New()
	if err != nil {
		return err
	}
	// Running from the initramfs (the stock guest image), / cannot be
	// pivoted out of: runc uses --no-pivot (MS_MOVE + chroot), as Kata
	// does for initrd guests. Copying / into a tmpfs and switching root
	// at boot would cost ~18 MiB of guest RAM and boot time for a
	// boundary the VM already provides.
	rc := &runc.Runc{Binary: o.runcPath, Root: filepath.Join(o.stateDir, "runc"), Reaper: rp, NoPivot: runc.RootIsInitramfs(), VersionFile: o.runcVersion,
		Debug: log.GetLevel() >= log.TraceLevel}
	if rc.NoPivot {
		log.L.Info("root is the initramfs: runc create --no-pivot")
	}
	if pid1 {
		// runc re-executes itself at every create and exec unless it
		// runs from a sealed memfd. A runc in guest RAM (the initramfs)
		// is moved into one: no more memory, one exec less each time.
		// A runc on the read-only runc image stays there (OnReadOnlyFS).
		if path, err := exec.LookPath(o.runcPath); err != nil {
			log.L.Warnf("runc runs from %s: %v", o.runcPath, err)
		} else if runc.OnReadOnlyFS(path) {
			log.L.Debugf("runc runs from %s, on a read-only filesystem (DAX %v)", path, initsys.IsDAX(path))
		} else {
			rc.SealInBackground(func() (*runc.Sealed, error) {
				if rc.NoPivot {
					return runc.MoveRunc(path)
				}
				return runc.SealRunc(path)
			})
		}
	}
	mgr, err := container.NewManager(container.Config{
		StateDir: o.stateDir, Runc: rc, Reaper: rp, Guest: o.guest,
	})
	if err != nil {
		return err
	}
	svc := &server.Service{Containers: mgr, Runc: rc}
	if o.network {
		if h, err := netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			log.L.Warnf("netlink: %v; network RPCs disabled", err)
		} else {
			svc.Network = network.Config{H: h}
		}
	}
	ctl, err := listen(o.listen)
	if err != nil {
		return err
	}
	str, err := listen(o.streamListen)
	if err != nil {
		return err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	svc.Register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ss := &stdio.Server{Lookup: mgr.Lookup, Logs: logs, AttachWait: o.attachWait}
	errc := make(chan error, 2)
	go func() { errc <- ss.Serve(ctx, str) }()
	go func() { errc <- srv.Serve(ctx, ctl) }()
	// The kernel's clock at /init and now: where a boot's time went,
	// without a verbose console. One write, so that no concurrent log
	// line splits it.
	now := bootClock()
	if pid1 {
		// The host dials on this one port write, before the console
		// line (stream.MarkerPort).
		if err := initsys.Mark(stream.MarkerPort, stream.ReadyMarker); err != nil {
			log.L.Debugf("%v: the host waits for the console line", err)
		}
	}
	fmt.Fprintf(os.Stderr, "%s (kernel clock at start %d ms, now %d ms)\n", stream.ReadyLine, started.Milliseconds(), now.Milliseconds())
	log.L.Infof("stratovirt-agent %s serving on %s and %s (pid %d; kernel clock at start %d ms, now %d ms)",
		server.Version, o.listen, o.streamListen, os.Getpid(), started.Milliseconds(), now.Milliseconds())
	if pid1 && log.GetLevel() >= log.DebugLevel {
		// Where the boot went, from the kernel log, without a verbose
		// console: its longest gaps, and with initcall_debug on the
		// command line the slowest initcalls.
		if p := initsys.BootProfile(12); p != "" {
			log.L.Debugf("kernel boot: %s", p)
		}
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGTERM, unix.SIGINT)
	select {
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	case s := <-sigc:
		if pid1 {
			// PID 1 in the guest: only the host ends the VM.
			log.L.Warnf("ignoring %v", s)
			select {}
		}
		log.L.Infof("%v: shutting down", s)
	}
	cancel()
	str.Close()
	srv.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if rerr := mgr.DestroySandbox(sctx); rerr != nil {
		log.L.Warnf("cleanup: %v", rerr)
	}
	mgr.Close()
	return err
}

// listen opens vsock://PORT or unix:///path.
func listen(addr string) (net.Listener, error) {
	if p, ok := strings.CutPrefix(addr, "vsock://"); ok {
		port, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("vsock port %q: %w", p, err)
		}
		l, err := vsock.Listen(uint32(port), nil)
		if err != nil {
			return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
		}
		return l, nil
	}
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		os.Remove(p)
		l, err := net.Listen("unix", p)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", p, err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("address %q: want vsock://PORT or unix:///path", addr)
}

func netlinkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}
