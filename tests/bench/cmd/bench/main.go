// Command bench runs the benchmark suite, each row against its peer in the
// same run, and writes results.md, results.json and results.svg. On a host
// whose KVM cannot boot Linux it runs itself inside the lab.
//
//	bench [-runs N] [-out DIR] [-rows boot,mem,agent,container,shimmem,freemem,density,pod,blk,net,vsock]
//
// Every group runs by default; -rows (make bench BENCH_ROWS=...) picks a
// subset. The agent group boots the `make guest` image to the agent
// listening on vsock (the microVM kernel against Debian's cloud kernel
// with modules). The container, shimmem, freemem and density groups
// start containerd 2.4.2 (make deps) with the stratovirt shim and compare
// with runc's shim on the same containerd; the container group also
// times a 64 MiB image (ours with and without the shim's image cache).
// The pod group starts
// containerd 2.4.2 with its CRI plugin (CNI bridge, local pause and
// busybox images) and times crictl runp + create + start and stopp + rmp
// of a one-container pod with the stratovirt handler against runc.
// freemem reads what a container holds after its workload touched and
// freed memory (ours with free page reporting on and off).
// BENCH_CTRD_LOG=1 keeps these daemons' logs (with the shims') in -out
// as containerd-GROUP.log. blk, net and vsock run the
// tests/bench/{blk,net,vsock} benchmarks (compiled on the host) against
// QEMU microvm.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/bench"
	"github.com/stratovirt-go/stratovirt/tests/ctrd"
	"github.com/stratovirt-go/stratovirt/tests/initramfs"
	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/tests/payload"
)

// allGroups is every row group, in the order they run.
const allGroups = "boot,mem,agent,container,shimmem,freemem,density,pod,blk,net,vsock"

// freeMemBurstMiB is what the freemem group's container touches and
// frees: half the 256 MiB guest, well above what an idle guest holds
// (about 50 MiB), so that the burst shows in the guest RAM's RSS.
const freeMemBurstMiB = 128

// densitySteps are the container counts the density group measures at.
var densitySteps = []int{1, 2, 4, 8}

const (
	// The cloud kernel has no /dev/port: a tiny static program writes 1
	// to the debug-exit port 0xf4, which ends both VMMs with status 3.
	exitInit = "#!/bin/sh\n/bin/debug-exit\nsleep 10\n"
	idleInit = "#!/bin/sh\nmount -t proc proc /proc\necho READY\nexec sleep 3600\n"
)

func main() {
	runs := flag.Int("runs", 10, "runs per side for time rows")
	memRuns := flag.Int("mem-runs", 3, "runs per side for memory rows")
	out := flag.String("out", "bench/results", "directory for results.{md,json,svg}")
	rows := flag.String("rows", allGroups, "comma-separated row groups: "+allGroups)
	vmm := flag.String("vmm", "bin/stratovirt", "our VMM binary")
	shimDir := flag.String("shim-dir", "", "(internal) prepared shim and guest image")
	resume := flag.Bool("resume", false, "(internal) keep the groups -out's results.json already has and run the others")
	summarize := flag.String("summarize", "", "print the table of the results.json in this directory, summaries and intervals recomputed from its samples, and run nothing; several comma-separated directories pool their runs (bench.Pool)")
	flag.Parse()
	if *summarize != "" {
		if err := printSummary(os.Stdout, strings.Split(*summarize, ",")); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*runs, *memRuns, *out, *rows, *vmm, *shimDir, *resume); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// printSummary writes the table of the run in dirs[0], or of the runs in
// dirs pooled.
func printSummary(w io.Writer, dirs []string) error {
	var reps []*bench.Report
	for _, dir := range dirs {
		rep, err := bench.ReadReport(dir)
		if err != nil {
			return err
		}
		reps = append(reps, rep)
	}
	rep := reps[0]
	if len(reps) == 1 {
		rep.Resummarize()
	} else {
		var err error
		if rep, err = bench.Pool(reps); err != nil {
			return err
		}
	}
	return rep.Markdown(w)
}

func run(runs, memRuns int, out, rows, vmm, shimDir string, resume bool) error {
	out, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	if vmm, err = filepath.Abs(vmm); err != nil {
		return err
	}
	if rows == "" || rows == "all" {
		rows = allGroups
	}
	if shimDir == "" {
		root, err := lab.RepoRoot()
		if err != nil {
			return err
		}
		if shimDir, err = os.MkdirTemp("", "bench-shim-"); err != nil {
			return err
		}
		defer os.RemoveAll(shimDir)
		if has(rows, "agent", "container", "shimmem", "freemem", "density", "pod") {
			if err := ctrd.Build(root, shimDir); err != nil {
				return err
			}
		}
		if has(rows, "agent") {
			// The agent group's reference: the same image with Debian's
			// cloud kernel and its modules.
			cmd := exec.Command("make", "--no-print-directory", "guest", "GUEST_DIR="+filepath.Join(shimDir, "guest-cloud"),
				"GUEST_KERNEL_DIR="+filepath.Join(root, ".cache/kernel/cloud-amd64"))
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("make guest with the cloud kernel: %v\n%s", err, out)
			}
		}
		if err := prepareIO(root, shimDir, rows); err != nil {
			return err
		}
	}
	where, why := lab.Where()
	if where == "needs-lab" {
		// Prepare on the host, measure in the lab.
		fmt.Fprintf(os.Stderr, "bench: host KVM cannot boot Linux (%s); running in the lab\n", why)
		self, err := os.Executable()
		if err != nil {
			return err
		}
		// A lab that freezes (lab.ErrFrozen: QEMU's, not the benchmark's)
		// loses only the group it was in: a fresh lab resumes from the
		// groups results.json already has.
		for labs := 1; ; labs++ {
			cmd := fmt.Sprintf("%s -runs %d -mem-runs %d -out %s -rows %s -vmm %s -shim-dir '%s' -resume=%t",
				self, runs, memRuns, out, rows, vmm, shimDir, labs > 1)
			// A lab that prints nothing for 10 minutes is wedged (every
			// group reports as it goes): end it instead of waiting out the
			// hour.
			res, err := lab.Run(context.Background(), lab.Options{Cmd: cmd, OutDir: out, Stdout: os.Stdout, Stderr: os.Stderr, THP: benchTHP(),
				Timeout: 50 * time.Minute, IdleTimeout: 10 * time.Minute})
			if errors.Is(err, lab.ErrFrozen) && labs < maxBenchLabs {
				fmt.Fprintf(os.Stderr, "bench: %v\nbench: the lab froze; going on in a fresh lab (%d of %d)\n", err, labs+1, maxBenchLabs)
				continue
			}
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				return fmt.Errorf("benchmark in the lab exited %d", res.ExitCode)
			}
			return nil
		}
	}
	var env bench.BootEnv
	if has(rows, "boot", "mem") {
		var cleanup func()
		if env, cleanup, err = prepare(vmm, runs); err != nil {
			return err
		}
		defer cleanup()
	}
	rep := &bench.Report{Generated: time.Now(), Where: fmt.Sprintf("%s KVM (%s)", where, why)}
	if resume {
		if rep, err = bench.ReadReport(out); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
	} else {
		// At once, so that a resumed run never finds an older run's
		// report or I/O runs.
		if err := rep.Write(out); err != nil {
			return err
		}
		for g := range ioBench {
			if err := os.Remove(ioRunsFile(out, g)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	if lab.InLab() {
		rep.Where = "nested KVM in the lab (QEMU TCG, qemu64+svm+npt, transparent huge pages " + thpMode() + ")"
	}
	var failed []error
	for _, group := range strings.Split(rows, ",") {
		if slices.Contains(rep.Groups, group) {
			fmt.Fprintf(os.Stderr, "bench: group %s: done in an earlier lab\n", group)
			continue
		}
		var r []bench.Row
		t0 := time.Now()
		switch group {
		case "boot":
			r, err = bench.BootRows(env)
		case "mem":
			r, err = bench.MemRows(env, memRuns)
		case "agent":
			r, err = bench.AgentBootRows(vmm, guestImages(shimDir), runs, os.Getenv("BENCH_BREAKDOWN") != "")
		case "container", "shimmem", "freemem", "density":
			r, err = containerRows(group, shimDir, out, runs, memRuns)
		case "pod":
			r, err = podRows(shimDir, out, runs)
		case "blk", "net", "vsock":
			r, err = ioRows(group, shimDir, out)
		default:
			return fmt.Errorf("unknown row group %q", group)
		}
		fmt.Fprintf(os.Stderr, "bench: group %s: %d rows in %v\n", group, len(r), time.Since(t0).Round(time.Second))
		rep.Rows = append(rep.Rows, r...)
		rep.Groups = append(rep.Groups, group)
		// Write what is there after every group: a run cut short by the
		// lab's timeout keeps its finished groups.
		if werr := rep.Write(out); werr != nil {
			return werr
		}
		if err != nil {
			// Keep going: one broken group must not lose the others.
			fmt.Fprintf(os.Stderr, "bench: group %s: %v\n", group, err)
			failed = append(failed, fmt.Errorf("group %s: %w", group, err))
		}
	}
	if err := rep.Write(out); err != nil {
		return err
	}
	if err := rep.Markdown(os.Stdout); err != nil {
		return err
	}
	return errors.Join(failed...)
}

// maxBenchLabs bounds the labs one bench run uses when labs freeze. The
// I/O groups keep their finished runs (bench.SaveRuns), so each fresh lab
// makes progress.
const maxBenchLabs = 6

// benchTHP is the lab's transparent huge page mode for benchmarks:
// $LAB_THP, else madvise. A stock host gives guest RAM huge pages (Debian's
// kernel defaults to always; QEMU and our VMM madvise guest RAM), so the
// benchmarks measure with them; the test suite's labs stay at never, the
// setting they have been stable with.
func benchTHP() string {
	if v := os.Getenv("LAB_THP"); v != "" {
		return v
	}
	return "madvise"
}

// thpMode is this kernel's transparent huge page mode (the bracketed word
// of /sys/kernel/mm/transparent_hugepage/enabled), or "unknown".
func thpMode() string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return "unknown"
	}
	_, rest, ok := strings.Cut(string(b), "[")
	mode, _, ok2 := strings.Cut(rest, "]")
	if !ok || !ok2 {
		return "unknown"
	}
	return mode
}

// has reports whether the comma-separated list holds any of names.
func has(list string, names ...string) bool {
	for _, n := range names {
		if strings.Contains(","+list+",", ","+n+",") {
			return true
		}
	}
	return false
}

// guestImages are the images the agent group boots: the `make guest`
// image with Debian's cloud kernel and its modules first (the reference
// the ratios are taken against), then with the microVM kernel
// (agent/kernel), as bzImage and as PVH vmlinux with the initramfs, and
// as PVH vmlinux with the root image (what the shim boots by default).
func guestImages(shimDir string) []bench.GuestImage {
	g, c := filepath.Join(shimDir, "guest"), filepath.Join(shimDir, "guest-cloud")
	imgs := []bench.GuestImage{
		{Name: "Debian cloud kernel + modules, PVH vmlinux (before)", Kernel: filepath.Join(c, "vmlinux"), Initrd: filepath.Join(c, "initramfs.cpio")},
		{Name: "microVM kernel, bzImage", Kernel: filepath.Join(g, "vmlinuz"), Initrd: filepath.Join(g, "initramfs.cpio")},
		{Name: "microVM kernel, PVH vmlinux, initramfs", Kernel: filepath.Join(g, "vmlinux"), Initrd: filepath.Join(g, "initramfs.cpio")},
		{Name: "microVM kernel, PVH vmlinux, root image (the shim's default)", Kernel: filepath.Join(g, "vmlinux"), Image: filepath.Join(g, "root.erofs")},
	}
	// BENCH_GUEST_IMAGES adds NAME=KERNEL:INITRD,... (development); an
	// INITRD ending in .erofs is a root image, booted as the shim boots
	// root.erofs.
	for _, e := range strings.Split(os.Getenv("BENCH_GUEST_IMAGES"), ",") {
		if img, ok := parseGuestImage(e); ok {
			imgs = append(imgs, img)
		}
	}
	return imgs
}

// parseGuestImage reads one NAME=KERNEL:INITRD entry of BENCH_GUEST_IMAGES.
func parseGuestImage(e string) (bench.GuestImage, bool) {
	name, files, ok := strings.Cut(e, "=")
	k, i, ok2 := strings.Cut(files, ":")
	if !ok || !ok2 || name == "" || k == "" || i == "" {
		return bench.GuestImage{}, false
	}
	if strings.HasSuffix(i, ".erofs") {
		return bench.GuestImage{Name: name, Kernel: k, Image: i}, true
	}
	return bench.GuestImage{Name: name, Kernel: k, Initrd: i}, true
}

// containerRows runs a container group on a private containerd 2.4.2.
func containerRows(group, shimDir, out string, runs, memRuns int) ([]bench.Row, error) {
	root, err := lab.RepoRoot()
	if err != nil {
		return nil, err
	}
	logw, closeLog, err := ctrdLog(out, group)
	if err != nil {
		return nil, err
	}
	defer closeLog()
	o := ctrd.Options{BinDir: filepath.Join(root, ".cache/bin"), ConfigVersion: 3, ShimDir: shimDir, Log: logw}
	switch group {
	case "freemem":
		o.EnableAnnotations = []string{"free_page_reporting"}
	case "density":
		o.EnableAnnotations = []string{"mem_merge"}
	}
	d, err := ctrd.Start(o)
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	if err := d.Import(); err != nil {
		return nil, err
	}
	switch group {
	case "shimmem":
		return bench.ShimMemRows(d, memRuns, 256)
	case "freemem":
		return bench.FreeMemRows(d, memRuns, 256, freeMemBurstMiB)
	case "density":
		return bench.DensityRows(d, densitySteps)
	}
	return bench.ContainerRows(d, runs, os.Getenv("BENCH_AB"))
}

// podRows runs the pod group on a private containerd 2.4.2 with CRI.
func podRows(shimDir, out string, runs int) ([]bench.Row, error) {
	root, err := lab.RepoRoot()
	if err != nil {
		return nil, err
	}
	logw, closeLog, err := ctrdLog(out, "pod")
	if err != nil {
		return nil, err
	}
	defer closeLog()
	d, err := ctrd.Start(ctrd.Options{BinDir: filepath.Join(root, ".cache/bin"), ConfigVersion: 3, ShimDir: shimDir, CRI: &ctrd.CRI{}, Log: logw})
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	if err := d.ImportCRIImages(); err != nil {
		return nil, err
	}
	return bench.PodRows(d, runs, 256)
}

// ctrdLog opens out/containerd-GROUP.log for containerd's output with
// the shims' logs (ours logs where a container start goes at info level)
// when BENCH_CTRD_LOG is set; out is the one directory the lab writes
// back to the host.
func ctrdLog(out, group string) (io.Writer, func(), error) {
	if os.Getenv("BENCH_CTRD_LOG") == "" {
		return nil, func() {}, nil
	}
	f, err := os.OpenFile(filepath.Join(out, "containerd-"+group+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("BENCH_CTRD_LOG: %w", err)
	}
	return f, func() { f.Close() }, nil
}

func prepare(vmm string, runs int) (bench.BootEnv, func(), error) {
	env := bench.BootEnv{VMM: vmm, Runs: runs}
	dir, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return env, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	fail := func(err error) (bench.BootEnv, func(), error) { cleanup(); return env, nil, err }
	if env.QEMU, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		return fail(fmt.Errorf("qemu-system-x86_64 not found (make deps)"))
	}
	if _, err := os.Stat(vmm); err != nil {
		return fail(fmt.Errorf("%s: %w (make build)", vmm, err))
	}
	k, err := lab.GuestKernel()
	if err != nil {
		return fail(err)
	}
	env.BzImage = k.Image
	if env.Vmlinux, err = lab.Vmlinux(); err != nil {
		return fail(err)
	}
	env.ExitInitrd = filepath.Join(dir, "exit.cpio")
	env.IdleInitrd = filepath.Join(dir, "idle.cpio")
	env.PVHPayload = filepath.Join(dir, "pvh.elf")
	exit := map[string][]byte{"bin/debug-exit": payload.UserPortWrite(0xf4, 1)}
	if err := initramfs.Busybox(env.ExitInitrd, exitInit, exit); err != nil {
		return fail(err)
	}
	if err := initramfs.Busybox(env.IdleInitrd, idleInit, nil); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(env.PVHPayload, payload.PVHELF(payload.DebugExit32()), 0o644); err != nil {
		return fail(err)
	}
	return env, cleanup, nil
}
