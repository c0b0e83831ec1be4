// Package cri runs Kubernetes-style pods through containerd's CRI plugin
// (containerd 2.4.2 from .cache/bin) with the stratovirt runtime handler,
// driven by crictl: TestMain builds the shim and the guest image on the
// host, then re-runs the test binary in the lab (lab.Exec), where each
// test gets a containerd with a private root, state, socket, CNI bridge
// configuration (CNI plugins from .cache/cni/bin) and locally built
// images imported under the names the pod specs use.
package cri

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

const (
	envShimDir   = "CRI_SHIM_DIR"
	pauseImage   = "registry.k8s.io/pause:3.10"
	busyboxImage = "docker.io/library/busybox:1.36"
	handler      = "stratovirt"
	podSubnet    = "10.88.7.0/24"
	bridgeName   = "svcri0"
)

func TestMain(m *testing.M) {
	os.Exit(ctrd.LabMain(m, envShimDir))
}

// daemon is one containerd with the CRI plugin and its own root, state,
// sockets and CNI configuration.
type daemon struct {
	t         *testing.T
	dir       string
	sock      string
	cmd       *exec.Cmd
	log       bytes.Buffer
	crictlBin string
	ctr       string
}

// criSetup is the CRI configuration of the tests' containerd in dir:
// the runc and stratovirt handlers (the latter passing io.stratovirt.*
// annotations on), the svcri CNI bridge, the local pause image and the
// registry mirror configuration in dir/certs.d.
func criSetup(dir, root string) ctrd.CRI {
	return ctrd.CRI{CNIBinDir: filepath.Join(root, ".cache/cni/bin"), Network: "svcri", Bridge: bridgeName, Subnet: podSubnet,
		SandboxImage: pauseImage, RegistryConfigPath: filepath.Join(dir, "certs.d"), Annotations: []string{"io.stratovirt.*"}}
}

// criConfig is containerd's configuration (ctrd.CRI.Config).
func criConfig(dir, root, shimDir string) string {
	return criSetup(dir, root).Config(dir, shimDir)
}

// cniConfig is a bridge network with host-local addresses and portmap
// (ctrd.CRI.CNIConfig).
func cniConfig() string {
	return ctrd.CRI{Network: "svcri", Bridge: bridgeName, Subnet: podSubnet}.CNIConfig()
}

func startContainerd(t *testing.T) *daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("needs /dev/kvm")
	}
	root, _ := lab.RepoRoot()
	dir, err := os.MkdirTemp("", "cri-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	// A tmpfs: overlayfs snapshots cannot live on the lab's overlay root.
	if err := syscall.Mount("cri", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	shimDir := os.Getenv(envShimDir)
	d := &daemon{t: t, dir: dir, sock: filepath.Join(dir, "c.sock"),
		crictlBin: filepath.Join(root, ".cache/bin/crictl"), ctr: filepath.Join(root, ".cache/bin/ctr")}
	conf := fmt.Sprintf(`[hypervisor]
kernel = %q
image = %q
runc_image = %q
default_vcpus = 1
default_memory = 256
boot_timeout = "60s"
console_log = true
enable_annotations = ["default_vcpus", "default_memory"]
[runtime]
log_level = "debug"
work_dir = %q
rootfs_cache_dir = %q
`, filepath.Join(shimDir, "guest/vmlinux"), filepath.Join(shimDir, "guest/root.erofs"), filepath.Join(shimDir, "guest/runc.erofs"), filepath.Join(dir, "work"),
		filepath.Join(dir, ctrd.ImageCache))
	must(t, os.WriteFile(filepath.Join(dir, "configuration.toml"), []byte(conf), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "net.d"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "net.d/10-svcri.conflist"), []byte(cniConfig()), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(criConfig(dir, root, shimDir)), 0o644))
	d.cmd = exec.Command(filepath.Join(root, ".cache/bin/containerd"), "--config", filepath.Join(dir, "config.toml"), "--log-level", "debug")
	d.cmd.Env = append(os.Environ(), "PATH="+shimDir+":"+filepath.Join(root, ".cache/bin")+":/usr/sbin:/usr/bin:/sbin:/bin")
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	for i := 0; ; i++ {
		if _, err := d.crictlRun(10*time.Second, "version"); err == nil {
			break
		}
		if i > 150 {
			t.Fatalf("containerd did not start:\n%s", d.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.serveImages(t, root)
	return d
}

// registryAddr is the local registry (distribution v3, plain HTTP on
// loopback) that containerd reaches as the mirror of registry.k8s.io and
// docker.io.
const registryAddr = "127.0.0.1:5000"

// serveImages starts the local registry, pushes the locally built images
// under the names the tests use, points containerd's mirror
// configuration at it and pulls the busybox image through CRI (the
// pause image is pulled by the first runp). Without the registry binary
// (make deps) the images are imported with ctr instead.
func (d *daemon) serveImages(t *testing.T, root string) {
	t.Helper()
	images := map[string]imageSpec{pauseImage: pauseSpec(), busyboxImage: busyboxSpec()}
	bin := filepath.Join(root, ".cache/bin/registry")
	if _, err := os.Stat(bin); err != nil {
		t.Logf("no %s: importing the images with ctr", bin)
		for ref, img := range images {
			p := filepath.Join(d.dir, "img.tar")
			must(t, ociImage(p, ref, img))
			if out, err := d.ctrRun(60*time.Second, "-n", "k8s.io", "images", "import", p); err != nil {
				t.Fatalf("import %s: %v\n%s", ref, err, out)
			}
		}
		return
	}
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n",
		filepath.Join(d.dir, "registry"), registryAddr)
	must(t, os.WriteFile(filepath.Join(d.dir, "registry.yml"), []byte(conf), 0o644))
	reg := exec.Command(bin, "serve", filepath.Join(d.dir, "registry.yml"))
	reg.Stdout, reg.Stderr = &d.log, &d.log
	must(t, reg.Start())
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + registryAddr + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 {
			t.Fatalf("registry did not start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for ref, spec := range images {
		img, err := buildImage(spec)
		must(t, err)
		host, rest, _ := strings.Cut(ref, "/")
		repo, tag, _ := strings.Cut(rest, ":")
		must(t, pushImage(registryAddr, repo, tag, img))
		hosts := fmt.Sprintf("server = \"https://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", host, registryAddr)
		must(t, os.MkdirAll(filepath.Join(d.dir, "certs.d", host), 0o755))
		must(t, os.WriteFile(filepath.Join(d.dir, "certs.d", host, "hosts.toml"), []byte(hosts), 0o644))
	}
	d.crictl(t, "pull", busyboxImage)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (d *daemon) stop() {
	// Remove what is left (pods of a failed test) so that no VM, shim
	// or netns outlives the test.
	if out, err := d.crictlRun(60*time.Second, "pods", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			d.crictlRun(60*time.Second, "stopp", id)
			d.crictlRun(60*time.Second, "rmp", "-f", id)
		}
	}
	if d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	}
	if d.t.Failed() {
		log := d.log.String()
		if len(log) > 80000 {
			log = log[len(log)-80000:]
		}
		d.t.Logf("containerd log:\n%s", log)
	}
	exec.Command("sh", "-c", "umount -R "+d.dir+"/* 2>/dev/null; true").Run()
	syscall.Unmount(d.dir, syscall.MNT_DETACH)
	os.RemoveAll(d.dir)
	exec.Command("ip", "link", "del", bridgeName).Run()
	os.RemoveAll("/var/lib/cni/networks/svcri")
}

func (d *daemon) crictlRun(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ep := "unix://" + d.sock
	cmd := exec.CommandContext(ctx, d.crictlBin, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "2m"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// crictl runs crictl and fails the test on error; it returns stdout.
func (d *daemon) crictl(t *testing.T, args ...string) string {
	t.Helper()
	t0 := time.Now()
	out, err := d.crictlRun(3*time.Minute, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("crictl %s: %v", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond))
	return strings.TrimSpace(out)
}

func (d *daemon) ctrRun(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.ctr, append([]string{"-a", d.sock}, args...)...).CombinedOutput()
	return string(out), err
}

// writeJSON writes v as a JSON file in the daemon's directory.
func (d *daemon) writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	p := filepath.Join(d.dir, name)
	must(t, os.WriteFile(p, b, 0o644))
	return p
}

// podConfig is a crictl pod sandbox configuration.
func podConfig(name string, extra map[string]any) map[string]any {
	c := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid", "attempt": 1},
		"hostname":      name,
		"log_directory": "/tmp/cri-logs/" + name,
		"linux":         map[string]any{},
		"dns_config":    map[string]any{"servers": []string{"10.96.0.10"}, "searches": []string{"default.svc.cluster.local"}, "options": []string{"ndots:5"}},
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// containerConfig is a crictl container configuration running args in
// the busybox image.
func containerConfig(name string, args ...string) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": busyboxImage},
		"command":  args,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
}

// podIP returns the pod's IP address from crictl inspectp.
func (d *daemon) podIP(t *testing.T, id string) string {
	t.Helper()
	var st struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
			State string `json:"state"`
		} `json:"status"`
	}
	must(t, json.Unmarshal([]byte(d.crictl(t, "inspectp", id)), &st))
	if st.Status.State != "SANDBOX_READY" {
		t.Fatalf("pod %s is %s", id, st.Status.State)
	}
	if st.Status.Network.IP == "" {
		t.Fatalf("pod %s has no IP", id)
	}
	return st.Status.Network.IP
}

// ping pings ip from the host (busybox ping), retrying for a while.
func ping(t *testing.T, ip string) {
	t.Helper()
	var out []byte
	var err error
	for range 10 {
		out, err = exec.Command("busybox", "ping", "-c", "1", "-W", "2", ip).CombinedOutput()
		if err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("ping %s from the host: %v\n%s", ip, err, out)
}
