package cri

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPodSandbox runs a pod with only its sandbox: runp, pods, inspectp
// (IP from CNI), the pod IP answers ping from the host over the bridge,
// stopp, rmp, and nothing is left behind.
func TestPodSandbox(t *testing.T) {
	d := startContainerd(t)
	cfg := d.writeJSON(t, "pod.json", podConfig("sandbox", nil))
	t0 := time.Now()
	id := d.crictl(t, "runp", "--runtime", handler, cfg)
	t.Logf("runp: %v", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(d.crictl(t, "pods", "-q"), id) {
		t.Fatal("pod not listed")
	}
	ip := d.podIP(t, id)
	ping(t, ip)
	d.crictl(t, "stopp", id)
	d.crictl(t, "rmp", id)
	if out := d.crictl(t, "pods", "-q"); out != "" {
		t.Errorf("pods after rmp: %q", out)
	}
	d.checkClean(t)
}

// TestTwoPods: two pods get different IPs on the bridge and both answer
// from the host.
func TestTwoPods(t *testing.T) {
	d := startContainerd(t)
	a := d.crictl(t, "runp", "--runtime", handler, d.writeJSON(t, "a.json", podConfig("pod-a", nil)))
	b := d.crictl(t, "runp", "--runtime", handler, d.writeJSON(t, "b.json", podConfig("pod-b", nil)))
	ipa, ipb := d.podIP(t, a), d.podIP(t, b)
	if ipa == ipb {
		t.Fatalf("both pods have %s", ipa)
	}
	ping(t, ipa)
	ping(t, ipb)
	for _, id := range []string{a, b} {
		d.crictl(t, "stopp", id)
		d.crictl(t, "rmp", id)
	}
	d.checkClean(t)
}

var guestLine = regexp.MustCompile(`sandbox: agent .* \((\d+) CPUs, (\d+) MiB\)`)

// TestPodSizing: CRI sandbox resources (pod overhead + limits) become
// annotations that grow the VM beyond the configured 1 vCPU / 256 MiB.
func TestPodSizing(t *testing.T) {
	d := startContainerd(t)
	pod := podConfig("sized", map[string]any{"linux": map[string]any{
		"resources": map[string]any{"cpu_period": 100000, "cpu_quota": 200000, "memory_limit_in_bytes": 256 << 20},
	}})
	id := d.crictl(t, "runp", "--runtime", handler, d.writeJSON(t, "pod.json", pod))
	defer func() { d.crictl(t, "stopp", id); d.crictl(t, "rmp", id) }()
	m := guestLine.FindAllStringSubmatch(d.log.String(), -1)
	if len(m) == 0 {
		t.Fatal("no guest size line in the shim log")
	}
	last := m[len(m)-1]
	cpus, _ := strconv.Atoi(last[1])
	mib, _ := strconv.Atoi(last[2])
	t.Logf("guest: %d CPUs, %d MiB", cpus, mib)
	// 1 configured + 2 from the quota, capped at the host's CPUs.
	if want := min(3, runtime.NumCPU()); cpus != want {
		t.Errorf("guest CPUs %d, want %d", cpus, want)
	}
	if mib < 400 {
		t.Errorf("guest memory %d MiB, want about 256 + 256", mib)
	}
}

// TestPodContainer runs an HTTP server container in a pod: create,
// start, ps, inspect, exec (DNS from the pod config, hostname, guest
// interface), logs, stats, the pod IP serves HTTP to the host, stop, rm.
func TestPodContainer(t *testing.T) {
	d := startContainerd(t)
	podCfg := d.writeJSON(t, "pod.json", podConfig("web", nil))
	t0 := time.Now()
	pod := d.crictl(t, "runp", "--runtime", handler, podCfg)
	ctrCfg := d.writeJSON(t, "web.json", containerConfig("web", "sh", "-c", "echo started; exec httpd -f -v -p 80 -h /www"))
	cid := d.crictl(t, "create", pod, ctrCfg, podCfg)
	// The shim creates the container's task (and its disk) on start.
	d.crictl(t, "start", cid)
	t.Logf("runp+create+start: %v", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(d.crictl(t, "ps", "-q"), cid) {
		t.Error("container not listed")
	}
	var insp struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	must(t, json.Unmarshal([]byte(d.crictl(t, "inspect", cid)), &insp))
	if insp.Status.State != "CONTAINER_RUNNING" {
		t.Errorf("state %s", insp.Status.State)
	}
	if got := d.crictl(t, "exec", cid, "cat", "/etc/resolv.conf"); !strings.Contains(got, "nameserver 10.96.0.10") ||
		!strings.Contains(got, "search default.svc.cluster.local") || !strings.Contains(got, "ndots:5") {
		t.Errorf("resolv.conf in the container:\n%s", got)
	}
	if got := d.crictl(t, "exec", cid, "hostname"); got != "web" {
		t.Errorf("hostname %q", got)
	}
	ip := d.podIP(t, pod)
	if got := d.crictl(t, "exec", cid, "ip", "-o", "addr", "show", "eth0"); !strings.Contains(got, ip+"/") {
		t.Errorf("eth0 in the guest has no %s:\n%s", ip, got)
	}
	// HTTP from the host to the pod IP.
	var body []byte
	for i := 0; ; i++ {
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://" + ip + "/index.html")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if i == 20 {
			t.Fatalf("GET from the host: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if string(body) != "hello from stratovirt\n" {
		t.Errorf("body %q", body)
	}
	if logs := d.crictl(t, "logs", cid); !strings.Contains(logs, "started") {
		t.Errorf("logs: %q", logs)
	}
	if st := d.crictl(t, "stats", "-o", "json", cid); !strings.Contains(st, "memory") {
		t.Errorf("stats: %s", st)
	}
	d.crictl(t, "stop", cid)
	d.crictl(t, "rm", cid)
	d.crictl(t, "stopp", pod)
	d.crictl(t, "rmp", pod)
	d.checkClean(t)
}

// checkClean fails if a shim, a VM's tap or a pod netns outlived the
// pods.
func (d *daemon) checkClean(t *testing.T) {
	t.Helper()
	var last string
	for range 50 {
		out, _ := exec.Command("pgrep", "-af", "containerd-shim-stratovirt").Output()
		last = strings.TrimSpace(string(out))
		if last == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("shims left: %s", last)
}
