package bench

import (
	"fmt"
	"strings"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
)

// ContainerRows measures container start and teardown end to end: the wall
// time of `ctr run --rm <image> <id> true` through the stratovirt shim (a
// microVM per container) and through io.containerd.runc.v2, alternating,
// on the same containerd d (with ctrd.Image imported). With ab set
// (BENCH_AB, development: "SECTION.KEY=VALUE" of the shim's configuration,
// e.g. "hypervisor.kernel=/tmp/k/vmlinux") each round also runs ours with
// that one setting changed (the two taking turns going first), and a row
// compares it with ours as configured: an A/B in one lab.
func ContainerRows(d *ctrd.Daemon, runs int, ab string) ([]Row, error) {
	var abConf string
	if ab != "" {
		section, key, value, err := ParseSetting(ab)
		if err != nil {
			return nil, fmt.Errorf("BENCH_AB: %w", err)
		}
		if abConf, err = d.ShimConfigWith("ab", section, key, value); err != nil {
			return nil, err
		}
	}
	// The first container on a fresh containerd pays cold caches on both
	// sides and, on ours, the build of the image's cached base: a row of
	// its own, kept out of the steady-state runs.
	firstOurs, err := timeRun(d, ctrd.Image, "bench-sv-first", "--runtime", ctrd.Runtime)
	if err != nil {
		return nil, err
	}
	firstPeer, err := timeRun(d, ctrd.Image, "bench-runc-first", "--runtime", runcRuntime)
	if err != nil {
		return nil, err
	}
	var ours, peer, oursB []float64
	a := ctrRun{&ours, "bench-sv-%d", []string{"--runtime", ctrd.Runtime}}
	b := ctrRun{&oursB, "bench-svb-%d", []string{"--runtime", ctrd.Runtime, "--runtime-config-path", abConf}}
	p := ctrRun{&peer, "bench-runc-%d", []string{"--runtime", runcRuntime}}
	for i := 0; i < runs; i++ {
		// A microVM started right after another one finds the host still
		// tearing the last one down: A and B take turns going first, and
		// runc's run ends each round.
		order := []ctrRun{a, p}
		switch {
		case abConf != "" && i%2 == 0:
			order = []ctrRun{a, b, p}
		case abConf != "":
			order = []ctrRun{b, a, p}
		}
		if err := runRound(d, ctrd.Image, i, order); err != nil {
			return nil, err
		}
	}
	const what = "container start+stop: ctr run --rm true (wall), 1 vCPU, 256 MiB"
	r := NewRow(what, "ms", ours, "runc (io.containerd.runc.v2)", peer)
	r.Note = "containerd 2.4.2; ours boots a microVM per container; after one run a side on the fresh containerd (the next row)"
	f := NewRow("container start+stop, the first on a fresh containerd: ctr run --rm true (wall), 1 vCPU, 256 MiB", "ms",
		[]float64{firstOurs}, "runc (io.containerd.runc.v2)", []float64{firstPeer})
	f.Note = "cold caches on both sides; ours also builds the image's cached base"
	rows := []Row{r, f}
	if abConf != "" {
		abRow := NewRow(fmt.Sprintf("%s, ours with %s against ours", what, ab), "ms", oursB, "ours as configured", ours)
		abRow.Note = "BENCH_AB: each round runs ours and ours with this setting, taking turns going first, then runc"
		rows = append(rows, abRow)
	}
	big, err := bigImageRows(d, runs)
	if err != nil {
		return nil, err
	}
	return append(rows, big...), nil
}

// ParseSetting splits "SECTION.KEY=VALUE" (a setting of the shim's
// configuration file).
func ParseSetting(s string) (section, key, value string, err error) {
	name, value, ok := strings.Cut(s, "=")
	section, key, ok2 := strings.Cut(name, ".")
	if !ok || !ok2 || section == "" || key == "" || strings.ContainsAny(name, " \t[]\"") {
		return "", "", "", fmt.Errorf("%q: want SECTION.KEY=VALUE, as hypervisor.kernel_params=-- -log-level debug", s)
	}
	return section, key, value, nil
}

// bigImageRows times `ctr run --rm` of ctrd.BigImage: ours (each root a
// copy-on-write overlay of one cached image of the layers), ours with the
// cache off (each root packed into an image of its own, as before the
// cache) and runc, in turn. Our first run builds the cached image.
func bigImageRows(d *ctrd.Daemon, runs int) ([]Row, error) {
	if err := d.ImportBig(); err != nil {
		return nil, err
	}
	noCache, err := d.ShimConfigWith("nocache", "runtime", "rootfs_cache_dir", "")
	if err != nil {
		return nil, err
	}
	var cached, uncached, peer []float64
	for i := 0; i < runs; i++ {
		if err := runRound(d, ctrd.BigImage, i, []ctrRun{
			{&cached, "big-sv-%d", []string{"--runtime", ctrd.Runtime}},
			{&uncached, "big-svnc-%d", []string{"--runtime", ctrd.Runtime, "--runtime-config-path", noCache}},
			{&peer, "big-runc-%d", []string{"--runtime", runcRuntime}},
		}); err != nil {
			return nil, err
		}
	}
	what := fmt.Sprintf("container start+stop, %d MiB image: ctr run --rm true (wall), 1 vCPU, 256 MiB", ctrd.BigImageMiB)
	r := NewRow(what, "ms", cached, "runc (io.containerd.runc.v2)", peer)
	r.Note = "busybox and a second layer of incompressible data; ours: the root is a copy-on-write overlay of one cached image of the layers (our first run builds it)"
	b := NewRow(what+", ours against ours without the image cache", "ms", cached, "ours, rootfs_cache_dir off: each root packed into an image of its own (before)", uncached)
	return []Row{r, b}, nil
}

// ctrRun is one side of a round: `ctr run` flags, the container id
// (with %d for the round) and where its times go.
type ctrRun struct {
	to   *[]float64
	id   string
	args []string
}

// runRound times round i of image on d: each of runs in order.
func runRound(d *ctrd.Daemon, image string, i int, runs []ctrRun) error {
	for _, r := range runs {
		ms, err := timeRun(d, image, fmt.Sprintf(r.id, i), r.args...)
		if err != nil {
			return err
		}
		*r.to = append(*r.to, ms)
	}
	return nil
}

// timeRun runs `ctr run --rm <flags> image id true` on d and returns its
// wall time in milliseconds.
func timeRun(d *ctrd.Daemon, image, id string, flags ...string) (float64, error) {
	t0 := time.Now()
	out, err := d.Ctr(5*time.Minute, "", append(append([]string{"run", "--rm"}, flags...), image, id, "true")...)
	ms := float64(time.Since(t0).Microseconds()) / 1000
	if err != nil {
		return 0, fmt.Errorf("ctr run %v %s: %v: %s", flags, image, err, out)
	}
	return ms, nil
}
