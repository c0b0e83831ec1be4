package cri

import (
	"strings"
	"testing"
	"time"
)

// fetchIn fetches /index.html from host:port with an HTTP/1.0 GET
// through nc in container cid (busybox-static's wget crashes in
// getaddrinfo) until it answers or the attempts run out (the server may
// still be starting); it returns the body.
func (d *daemon) fetchIn(t *testing.T, cid, host, port string) string {
	t.Helper()
	var out string
	var err error
	for range 20 {
		out, err = d.crictlRun(time.Minute, "exec", cid, "sh", "-c",
			`printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 3 `+host+" "+port)
		if _, body, ok := strings.Cut(out, "\r\n\r\n"); err == nil && ok && strings.HasPrefix(out, "HTTP/1.") {
			return body
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("GET http://%s:%s/index.html in %s: %v\n%s", host, port, cid, err, out)
	return ""
}

// runIn creates and starts a busybox container in pod running args.
func (d *daemon) runIn(t *testing.T, pod, podCfg, name string, args ...string) string {
	t.Helper()
	cfg := d.writeJSON(t, name+".json", containerConfig(name, args...))
	cid := d.crictl(t, "create", pod, cfg, podCfg)
	d.crictl(t, "start", cid)
	return cid
}

// TestPodMultiContainer: two app containers in one pod VM share its
// network (one serves on 8080, the other fetches via localhost), its
// IPC namespace with the pod's sysctls and its /dev/shm, and see the
// pod's /etc/hosts and /etc/hostname (checkPodFeatures); the server's
// root is read-only. `crictl exec -it` gets a terminal and `crictl exec
// --timeout` kills the timed-out process. The client is then deleted
// and re-created under the same name (a restart in a live pod): its disk
// is unplugged and a fresh one plugged, its old files are gone and the
// server keeps serving.
func TestPodMultiContainer(t *testing.T) {
	d := startContainerd(t)
	podCfg := d.writeJSON(t, "pod.json", podConfig("multi", map[string]any{"linux": map[string]any{"sysctls": podSysctls}}))
	pod := d.crictl(t, "runp", "--runtime", handler, podCfg)
	srvCfg := d.writeJSON(t, "srv.json", readOnlyConfig("srv", "httpd", "-f", "-p", "8080", "-h", "/www"))
	srv := d.crictl(t, "create", pod, srvCfg, podCfg)
	d.crictl(t, "start", srv)
	cli := d.runIn(t, pod, podCfg, "cli", "sleep", "3600")
	if got := d.fetchIn(t, cli, "127.0.0.1", "8080"); got != "hello from stratovirt\n" {
		t.Errorf("localhost fetch: %q", got)
	}
	t0 := time.Now()
	d.checkPodFeatures(t, "multi", cli, srv)
	d.checkExecTTY(t, cli)
	d.checkExecTimeout(t, cli)
	t.Logf("pod features, tty exec, exec timeout: %v", time.Since(t0).Round(time.Millisecond))
	d.crictl(t, "exec", cli, "touch", "/marker")

	// Restart the client: stop, rm, create with the same name, start.
	d.crictl(t, "stop", cli)
	d.crictl(t, "rm", cli)
	cli2 := d.runIn(t, pod, podCfg, "cli", "sleep", "3600")
	if cli2 == cli {
		t.Fatalf("re-created container kept id %s", cli)
	}
	if out, err := d.crictlRun(time.Minute, "exec", cli2, "test", "-e", "/marker"); err == nil {
		t.Errorf("the restarted container sees its predecessor's /marker (%s)", out)
	}
	if got := d.fetchIn(t, cli2, "127.0.0.1", "8080"); got != "hello from stratovirt\n" {
		t.Errorf("localhost fetch after restart: %q", got)
	}
	ps := d.crictl(t, "ps", "-q")
	if !strings.Contains(ps, srv) || !strings.Contains(ps, cli2) || strings.Contains(ps, cli) {
		t.Errorf("ps after restart:\n%s", ps)
	}
	for _, c := range []string{cli2, srv} {
		d.crictl(t, "stop", c)
		d.crictl(t, "rm", c)
	}
	d.crictl(t, "stopp", pod)
	d.crictl(t, "rmp", pod)
	d.checkClean(t)
}

// TestPodToPod: a container in one pod fetches over HTTP from a
// container in another pod (VM to VM across the CNI bridge).
func TestPodToPod(t *testing.T) {
	d := startContainerd(t)
	cfgA := d.writeJSON(t, "a.json", podConfig("pod-a", nil))
	cfgB := d.writeJSON(t, "b.json", podConfig("pod-b", nil))
	a := d.crictl(t, "runp", "--runtime", handler, cfgA)
	b := d.crictl(t, "runp", "--runtime", handler, cfgB)
	srv := d.runIn(t, a, cfgA, "srv", "httpd", "-f", "-p", "80", "-h", "/www")
	cli := d.runIn(t, b, cfgB, "cli", "sleep", "3600")
	ipA := d.podIP(t, a)
	if got := d.fetchIn(t, cli, ipA, "80"); got != "hello from stratovirt\n" {
		t.Errorf("pod-b fetching from pod-a (%s): %q", ipA, got)
	}
	for _, c := range []string{srv, cli} {
		d.crictl(t, "stop", c)
		d.crictl(t, "rm", c)
	}
	for _, p := range []string{a, b} {
		d.crictl(t, "stopp", p)
		d.crictl(t, "rmp", p)
	}
	d.checkClean(t)
}
