package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
)

// podTimeout bounds one crictl call (a pod's VM boots on runp).
const podTimeout = 3 * time.Minute

// PodRows measures pod start and teardown through CRI: the wall time of
// `crictl runp` + `crictl create` + `crictl start` of a pod with one
// busybox container running `sleep 3600`, and of `crictl stopp` +
// `crictl rmp`, with the stratovirt handler (a microVM per pod) and the
// runc handler, alternating, on the same containerd d (started with
// Options.CRI and ctrd.ImportCRIImages done). While each pod idles, the
// host memory of its shim's process tree is read as the shimmem group
// reads a container's (guest RAM and the guest image apart; guestMiB of
// guest RAM). After each teardown no pod, container or shim may be left.
func PodRows(d *ctrd.Daemon, runs, guestMiB int) ([]Row, error) {
	var oStart, pStart, oStop, pStop, oPSS, pPSS, oGuest []float64
	var oPhases, pPhases [][3]float64
	// The first pod on a fresh containerd pays cold caches (the shim
	// binaries, the first CNI setup, our image's cached base): a row of
	// its own, kept out of the steady-state runs.
	var first [2]float64
	for j, h := range []string{ctrd.Handler, "runc"} {
		phases, _, _, err := podOnce(d, h, fmt.Sprintf("bench-%s-first", h), uint64(guestMiB)<<20)
		if err != nil {
			return nil, err
		}
		first[j] = phases[0] + phases[1] + phases[2]
	}
	for i := 0; i < runs; i++ {
		for _, h := range []string{ctrd.Handler, "runc"} {
			phases, stop, m, err := podOnce(d, h, fmt.Sprintf("bench-%s-%d", h, i), uint64(guestMiB)<<20)
			if err != nil {
				return nil, err
			}
			start := phases[0] + phases[1] + phases[2]
			if h == ctrd.Handler {
				oStart, oStop = append(oStart, start), append(oStop, stop)
				oPhases = append(oPhases, phases)
				oPSS, oGuest = append(oPSS, m.PSS), append(oGuest, m.GuestRSS)
			} else {
				pStart, pStop = append(pStart, start), append(pStop, stop)
				pPhases = append(pPhases, phases)
				pPSS = append(pPSS, m.PSS)
			}
		}
	}
	peer := "runc (io.containerd.runc.v2)"
	s := NewRow("pod start: crictl runp + create + start (wall), 1 busybox container, 1 vCPU, 256 MiB", "ms", oStart, peer, pStart)
	s.Note = "containerd 2.4.2 CRI, CNI bridge; ours boots a microVM per pod and creates the container's disk on start; after one pod a side on the fresh containerd (the next row); " +
		phaseNote(oPhases, pPhases)
	f := NewRow("pod start, the first on a fresh containerd: crictl runp + create + start (wall), 1 busybox container, 1 vCPU, 256 MiB", "ms",
		[]float64{first[0]}, peer, []float64{first[1]})
	f.Note = "cold caches on both sides: the shim binaries, the first CNI setup; ours also builds the image's cached base"
	t := NewRow("pod teardown: crictl stopp + rmp (wall)", "ms", oStop, peer, pStop)
	t.Note = "stops the container and the sandbox (ours: the VM) and removes both"
	m := NewRow(fmt.Sprintf("host memory per idle pod, %d MiB guest, excluding guest RAM and the guest image, PSS", guestMiB), "MiB", oPSS,
		"runc (shim + pause + container process)", pPSS)
	m.Note = "the pod's shim process tree while its container sleeps (ours: the shim with the VMM in it), read as the shimmem rows read a container's"
	g := NewRow(fmt.Sprintf("guest RAM touched per idle pod (%d MiB guest)", guestMiB), "MiB", oGuest, "", nil)
	g.Note = "RSS of the guest RAM mapping in the pod's shim: the kernel, the agent, the sandbox and the container"
	return []Row{s, f, t, m, g}, nil
}

// phaseNote gives each side's medians of runp, create and start, and
// every run of ours (its slow runs are the ones to explain).
func phaseNote(ours, peer [][3]float64) string {
	med := func(ph [][3]float64, i int) float64 {
		v := make([]float64, len(ph))
		for j, p := range ph {
			v[j] = p[i]
		}
		return Summarize("", v).Median
	}
	var runs []string
	for _, p := range ours {
		runs = append(runs, fmt.Sprintf("%.0f/%.0f/%.0f", p[0], p[1], p[2]))
	}
	return fmt.Sprintf("medians of runp/create/start: ours %.0f/%.0f/%.0f ms, runc %.0f/%.0f/%.0f ms; ours by run: %s",
		med(ours, 0), med(ours, 1), med(ours, 2), med(peer, 0), med(peer, 1), med(peer, 2), strings.Join(runs, ", "))
}

// podOnce starts a pod named name with handler h and one container, reads
// the memory of the pod's shim process tree while it idles, then stops
// and removes it, and returns the wall times of runp, create and start
// and of the teardown, in ms, and the memory.
func podOnce(d *ctrd.Daemon, h, name string, guestBytes uint64) (phases [3]float64, stop float64, mem memUse, err error) {
	logDir := filepath.Join(d.Dir, "pod-logs", name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return phases, 0, mem, err
	}
	podCfg, err := writeJSON(d.Dir, name+"-pod.json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid", "attempt": 1},
		"hostname":      name,
		"log_directory": logDir,
		"linux":         map[string]any{},
	})
	if err != nil {
		return phases, 0, mem, err
	}
	ctrCfg, err := writeJSON(d.Dir, name+"-ctr.json", map[string]any{
		"metadata": map[string]any{"name": "sleep"},
		"image":    map[string]any{"image": ctrd.Image},
		"command":  []string{"sleep", "3600"},
		"log_path": "sleep.log",
		"linux":    map[string]any{},
	})
	if err != nil {
		return phases, 0, mem, err
	}
	crictl := func(args ...string) (string, error) {
		out, err := d.Crictl(podTimeout, args...)
		if err != nil {
			return "", fmt.Errorf("%s pod %s: %w", h, name, err)
		}
		return strings.TrimSpace(out), nil
	}
	t0 := time.Now()
	pod, err := crictl("runp", "--runtime", h, podCfg)
	if err != nil {
		return phases, 0, mem, err
	}
	phases[0] = ms(time.Since(t0))
	// Whatever fails below, the pod goes (Stop would remove it too).
	defer func() {
		if err != nil {
			d.Crictl(podTimeout, "stopp", pod)
			d.Crictl(podTimeout, "rmp", "-f", pod)
		}
	}()
	t1 := time.Now()
	cid, err := crictl("create", pod, ctrCfg, podCfg)
	if err != nil {
		return phases, 0, mem, err
	}
	phases[1] = ms(time.Since(t1))
	t2 := time.Now()
	if _, err = crictl("start", cid); err != nil {
		return phases, 0, mem, err
	}
	phases[2] = ms(time.Since(t2))
	out, err := crictl("inspect", cid)
	if err != nil {
		return phases, 0, mem, err
	}
	var insp struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err = json.Unmarshal([]byte(out), &insp); err != nil {
		return phases, 0, mem, fmt.Errorf("%s pod %s: crictl inspect: %w", h, name, err)
	}
	if insp.Status.State != "CONTAINER_RUNNING" {
		err = fmt.Errorf("%s pod %s: container is %q after start", h, name, insp.Status.State)
		return phases, 0, mem, err
	}
	time.Sleep(2 * time.Second) // let the shim settle, as ShimMemRows does
	pid, err := shimPID(pod)
	if err == nil {
		mem, err = settledMemory(pid, guestBytes)
	}
	if err != nil {
		err = fmt.Errorf("%s pod %s: memory: %w", h, name, err)
		return phases, 0, mem, err
	}
	t3 := time.Now()
	if _, err = crictl("stopp", pod); err != nil {
		return phases, 0, mem, err
	}
	if _, err = crictl("rmp", pod); err != nil {
		return phases, 0, mem, err
	}
	stop = ms(time.Since(t3))
	if err = checkNoPods(d, h, name); err != nil {
		return phases, 0, mem, err
	}
	return phases, stop, mem, nil
}

// checkNoPods fails when a pod, a container or a shim process is left
// (shims may take a moment to exit after rmp).
func checkNoPods(d *ctrd.Daemon, h, name string) error {
	for _, what := range []string{"pods", "ps"} {
		args := []string{what, "-q"}
		if what == "ps" {
			args = append(args, "-a")
		}
		out, err := d.Crictl(time.Minute, args...)
		if err != nil {
			return fmt.Errorf("after %s pod %s: %w", h, name, err)
		}
		if s := strings.TrimSpace(out); s != "" {
			return fmt.Errorf("after removing %s pod %s, crictl %s lists %s", h, name, strings.Join(args, " "), s)
		}
	}
	var left []string
	for i := 0; i < 100; i++ {
		if left = shimPIDs(); len(left) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("after removing %s pod %s, shim processes %v are left", h, name, left)
}

// shimPIDs lists the containerd-shim processes on the host.
func shimPIDs() []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		arg0, _, _ := strings.Cut(string(b), "\x00")
		if strings.HasPrefix(filepath.Base(arg0), "containerd-shim") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// writeJSON writes v as JSON to dir/name and returns the path.
func writeJSON(dir, name string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return "", err
	}
	return p, nil
}
