package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
	"github.com/stratovirt-go/stratovirt/runtime/translate"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

// GuestImage is a kernel and an initramfs, or a kernel and a root image
// (virtio-pmem, mounted as /), that boot to the stratovirt agent (make
// guest).
type GuestImage struct {
	Name, Kernel, Initrd, Image string
}

// AgentCmdline is the shim's kernel command line.
const AgentCmdline = translate.BaseCmdline

// readyMarkerRE is the VMM's info line (vmm/vm.go) for the agent's ready
// marker.
var readyMarkerRE = regexp.MustCompile(fmt.Sprintf(`guest boot marker %d after`, stream.ReadyMarker))

// consoleLine is one console line and when the host read it.
type consoleLine struct {
	at   time.Duration // since the VMM was spawned
	text string
}

// agentBoot spawns vmm booting img with a vsock device and returns the
// time from spawn to the agent accepting a connection on its control
// port, and the console lines. cmdline replaces AgentCmdline when set.
func agentBoot(vmm string, img GuestImage, cid uint32, dir, cmdline string) (time.Duration, []consoleLine, error) {
	if cmdline == "" {
		cmdline = AgentCmdline
	}
	dev := fmt.Sprintf("vsock,id=vsock0,guest-cid=%d", cid)
	target := vsockdial.Target{CID: cid}
	if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
		uds := filepath.Join(dir, fmt.Sprintf("v%d.sock", cid))
		dev += ",backend=unix,uds-path=" + uds
		target = vsockdial.Target{UDSPath: uds}
	}
	boot := []string{"-initrd", img.Initrd}
	if img.Image != "" {
		// root= and the rest before the agent's own flags ("-- ...").
		kernel, agent, hasAgent := strings.Cut(cmdline, " -- ")
		cmdline = kernel + " " + translate.RootCmdline
		if hasAgent {
			cmdline += " -- " + agent
		}
		boot = []string{"-device", "virtio-pmem,id=root,readonly=on,file=" + img.Image}
	}
	args := append([]string{"-name", "bench-agent", "-kernel", img.Kernel, "-append", cmdline,
		"-smp", "1", "-m", "256M", "-serial", "stdio", "-device", dev}, boot...)
	cmd := exec.Command(vmm, args...)
	// At info level the VMM logs the guest's boot-marker writes.
	cmd.Env = append(os.Environ(), "STRATOVIRT_LOG_LEVEL=info")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, nil, err
	}
	errOut, err := cmd.StderrPipe()
	if err != nil {
		return 0, nil, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	var (
		mu     sync.Mutex
		lines  []consoleLine
		stderr strings.Builder
		done   = make(chan struct{})
		logged = make(chan struct{})
		ready  = make(chan struct{})
		signal = sync.OnceFunc(func() { close(ready) })
	)
	// The agent's ready marker or its console line, whichever comes
	// first, as the shim waits (runtime/sandbox).
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, consoleLine{time.Since(start), sc.Text()})
			mu.Unlock()
			if strings.Contains(sc.Text(), stream.ReadyLine) {
				signal()
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(errOut)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if readyMarkerRE.MatchString(sc.Text()) {
				signal()
			}
			mu.Lock()
			if stderr.Len() < 64<<10 {
				stderr.WriteString(sc.Text() + "\n")
			}
			mu.Unlock()
		}
		io.Copy(io.Discard, errOut)
	}()
	exited := make(chan struct{})
	go func() { <-done; <-logged; cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Dial when the agent says it listens, as the shim does: polling a
	// booting guest slows it down.
	c, err := sandbox.DialWhenReady(ctx, ready, exited, func() (net.Conn, error) {
		return vsockdial.DialOnce(ctx, target, stream.ControlPort)
	})
	switch {
	case errors.Is(err, sandbox.ErrVMGone):
		mu.Lock()
		defer mu.Unlock()
		return 0, nil, fmt.Errorf("VMM exited before the agent listened: %s", strings.TrimSpace(stderr.String()))
	case err != nil:
		return 0, nil, fmt.Errorf("agent not listening after 3 minutes: %v", err)
	}
	listening := time.Since(start)
	c.Close()
	// Let the console catch up with what the agent printed.
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	return listening, append([]consoleLine(nil), lines...), nil
}

// AgentBootRows boots each image runs times (interleaved) to the agent
// listening on vsock and reports spawn-to-agent per image; the first
// image is the reference the others' ratio is taken against. With
// breakdown it then boots each image once with a verbose console and adds
// a note with where the time went. That is opt-in: in the lab, a verbose
// serial console (thousands of port I/O exits per boot) sooner or later
// leaves the lab's CPU halted for good with a timer interrupt pending that
// QEMU's TCG never delivers (docs/performance.md, "The lab freeze").
func AgentBootRows(vmm string, imgs []GuestImage, runs int, breakdown bool) ([]Row, error) {
	if len(imgs) == 0 {
		return nil, nil
	}
	dir, err := os.MkdirTemp("", "bench-agent-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	samples := make([][]float64, len(imgs))
	phases := make([][]AgentClock, len(imgs))
	cid := uint32(4000 + os.Getpid()%1000*16)
	for i := 0; i < runs; i++ {
		for j, img := range imgs {
			cid++
			d, lines, err := agentBoot(vmm, img, cid, dir, "")
			if err != nil {
				return nil, fmt.Errorf("boot %s to the agent: %w", img.Name, err)
			}
			samples[j] = append(samples[j], ms(d))
			if c, ok := ParseAgentClock(lines); ok {
				c.Ready = ms(d)
				phases[j] = append(phases[j], c)
			}
			// Progress on stderr: the lab's idle limit and a reader both
			// see that the run is alive.
			fmt.Fprintf(os.Stderr, "bench: agent: %s (%d/%d): %.0f ms\n", img.Name, i+1, runs, ms(d))
		}
	}
	var rows []Row
	for j, img := range imgs {
		var r Row
		if j == 0 || len(imgs) == 1 {
			r = NewRow("boot to agent listening, "+img.Name+", 1 vCPU, 256 MiB", "ms", samples[j], "", nil)
		} else {
			r = NewRow("boot to agent listening, "+img.Name+", 1 vCPU, 256 MiB", "ms", samples[j], imgs[0].Name, samples[0])
		}
		r.Note = ClockNote(phases[j])
		if !breakdown {
			rows = append(rows, r)
			continue
		}
		cid++
		d, lines, err := agentBoot(vmm, img, cid, dir, strings.Replace(AgentCmdline, " quiet", "", 1)+" -- -log-level debug")
		if err != nil {
			return rows, fmt.Errorf("verbose boot %s: %w", img.Name, err)
		}
		r.Note = strings.TrimPrefix(r.Note+"; "+Breakdown(lines, d).String(), "; ")
		fmt.Fprintf(os.Stderr, "bench: agent: %s, verbose console: %s\n", img.Name, r.Note)
		rows = append(rows, r)
	}
	return rows, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// AgentClock is one quiet boot's phases from the agent's ready line
// (stream.ReadyLine), which carries the guest kernel's clock (CLOCK_BOOTTIME) when the
// agent started and when it served, in ms.
type AgentClock struct {
	Start, Serving float64 // kernel clock at /init and at serving
	Ready          float64 // host: spawn to the agent accepting
}

var agentClockRE = regexp.MustCompile(regexp.QuoteMeta(stream.ReadyLine) + ` \(kernel clock at start (\d+) ms, now (\d+) ms\)`)

// ParseAgentClock finds the agent's clock readings among console lines.
func ParseAgentClock(lines []consoleLine) (AgentClock, bool) {
	for _, l := range lines {
		if m := agentClockRE.FindStringSubmatch(l.text); m != nil {
			a, _ := strconv.ParseFloat(m[1], 64)
			b, _ := strconv.ParseFloat(m[2], 64)
			return AgentClock{Start: a, Serving: b}, true
		}
	}
	return AgentClock{}, false
}

// ClockNote gives the medians of the boots' phases: the kernel's own boot
// to /init, /init to the agent serving, and the rest of spawn-to-ready
// (VMM setup, kernel load and entry before the kernel's clock starts, the
// host's vsock connect).
func ClockNote(cs []AgentClock) string {
	if len(cs) == 0 {
		return ""
	}
	var k, a, rest []float64
	for _, c := range cs {
		k = append(k, c.Start)
		a = append(a, c.Serving-c.Start)
		rest = append(rest, c.Ready-c.Serving)
	}
	return fmt.Sprintf("medians of %d: kernel start to /init %.0f ms, /init to agent serving %.0f ms, the rest (VMM, load, pre-clock boot, connect) %.0f ms",
		len(cs), Summarize("", k).Median, Summarize("", a).Median, Summarize("", rest).Median)
}

// BootBreakdown is where a boot to the agent spent its time, in ms.
type BootBreakdown struct {
	// PreKernel: spawn to the kernel's clock starting (VMM setup, kernel
	// and initrd load, bzImage decompression), estimated as the smallest
	// host-read time minus printk time over the kernel's lines.
	PreKernel float64
	// UnpackStart, UnpackEnd: printk times of the initramfs unpack.
	UnpackStart, UnpackEnd float64
	// RunInit: printk time of "Run /init".
	RunInit float64
	// AgentLog: host time of the agent's first log line; ModulesDone of
	// its last "module ... loaded"; Serving of the ready line.
	AgentLog, ModulesDone, Serving float64
	// Ready: spawn to the agent accepting a connection.
	Ready float64
}

var printkRE = regexp.MustCompile(`^\[\s*(\d+\.\d+)\]\s*(.*)$`)

// Breakdown reads a verbose console (no quiet, agent at debug level).
func Breakdown(lines []consoleLine, ready time.Duration) BootBreakdown {
	b := BootBreakdown{PreKernel: -1, Ready: ms(ready)}
	for _, l := range lines {
		host := ms(l.at)
		if m := printkRE.FindStringSubmatch(l.text); m != nil {
			t, _ := strconv.ParseFloat(m[1], 64)
			t *= 1000
			if d := host - t; b.PreKernel < 0 || d < b.PreKernel {
				b.PreKernel = d
			}
			switch msg := m[2]; {
			case strings.Contains(msg, "Trying to unpack rootfs"):
				b.UnpackStart = t
			case strings.Contains(msg, "Freeing initrd memory"):
				b.UnpackEnd = t
			case strings.Contains(msg, "Run /init as init process"):
				b.RunInit = t
			}
			continue
		}
		ready := strings.Contains(l.text, stream.ReadyLine)
		if strings.Contains(l.text, "level=") || ready {
			if b.AgentLog == 0 {
				b.AgentLog = host
			}
			if strings.Contains(l.text, "module ") && strings.Contains(l.text, " loaded") {
				b.ModulesDone = host
			}
			if ready && b.Serving == 0 {
				b.Serving = host
			}
		}
	}
	if b.PreKernel < 0 {
		b.PreKernel = 0
	}
	return b
}

// String is the breakdown as one line, each phase on the host's clock
// (printk times shifted by PreKernel).
func (b BootBreakdown) String() string {
	k := func(t float64) float64 { return b.PreKernel + t }
	return fmt.Sprintf("verbose-console run: VMM+load+decompress %.0f ms; kernel to initramfs unpack %.0f ms; unpack %.0f ms; "+
		"to /init %.0f ms; /init to agent's first log %.0f ms; modules loaded at +%.0f ms; serving at +%.0f ms; ready %.0f ms",
		b.PreKernel, b.UnpackStart, b.UnpackEnd-b.UnpackStart, b.RunInit-b.UnpackEnd, b.AgentLog-k(b.RunInit),
		b.ModulesDone-b.AgentLog, b.Serving-b.AgentLog, b.Ready)
}
