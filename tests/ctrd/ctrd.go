// Package ctrd runs a private containerd with containerd-shim-stratovirt-v2
// for the e2e tests, the demo and the benchmarks: Build makes the shim and
// the guest image, OCIImage the busybox test image, and Start a containerd
// (2.x from .cache/bin or Debian's 1.6 from .cache/containerd-1.6) with its
// own root, state, sockets and shim configuration on a tmpfs; Ctr runs ctr
// against it. A Daemon is used from one goroutine; Stop may run once.
package ctrd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// Runtime is the shim's runtime name.
	Runtime = "io.containerd.stratovirt.v2"
	// Image is the name OCIImage's image is imported as.
	Image = "docker.io/library/e2e-busybox:1"
	// Namespace is the containerd namespace everything runs in.
	Namespace = "e2e"
)

// Build builds containerd-shim-stratovirt-v2 into dir and the guest
// image (make guest: kernel, initramfs with the agent, runc image) into
// dir/guest.
func Build(repoRoot, dir string) error {
	for _, c := range [][]string{
		{"go", "build", "-o", dir + "/", "./cmd/containerd-shim-stratovirt-v2"},
		{"make", "--no-print-directory", "guest", "GUEST_DIR=" + filepath.Join(dir, "guest")},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// Options describe one containerd.
type Options struct {
	// BinDir holds containerd and ctr (and is searched for shims after
	// ShimDir).
	BinDir string
	// ConfigVersion is containerd's config format: 2 (1.6, 1.7), 3 (2.x).
	ConfigVersion int
	// ShimDir is what Build filled: the shim and guest/.
	ShimDir string
	// VCPUs and MemoryMiB size each VM (default 1 and 256).
	VCPUs, MemoryMiB int
	// BootTimeout bounds each VM's boot to its agent (default 60 s).
	BootTimeout time.Duration
	// Debug turns on containerd's and the shim's debug logs.
	Debug bool
	// AgentLogLevel, when set, is the guest agent's log level. Its lines
	// reach the shim's log through the agent's log stream only (the agent
	// runs with -quiet-console: a verbose serial console slows the guest
	// and makes the lab freeze).
	AgentLogLevel string
	// Log receives containerd's output (and so the shims' logs); nil
	// discards it.
	Log io.Writer
	// CRI, when set, turns on containerd's CRI plugin with the runc and
	// stratovirt runtime handlers and a CNI bridge network (see CRI);
	// it needs ConfigVersion 3. Without it containerd runs with its
	// built-in defaults, as before.
	CRI *CRI
	// EnableAnnotations lists the [hypervisor] settings that pod
	// annotations may override (the shim's enable_annotations).
	EnableAnnotations []string
}

// Daemon is a running containerd.
type Daemon struct {
	// Dir is its tmpfs: config, root, state, sockets, the shim's work dir.
	Dir string
	// Sock is the gRPC socket; CtrBin the matching ctr.
	Sock, CtrBin string

	binDir string
	cri    *CRI
	cmd    *exec.Cmd
	stop   sync.Once
}

// Start starts containerd and waits until it answers; the caller must
// Stop it. It needs root.
func Start(o Options) (_ *Daemon, err error) {
	bin := filepath.Join(o.BinDir, "containerd")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w (make deps)", err)
	}
	if o.VCPUs == 0 {
		o.VCPUs = 1
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 256
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = time.Minute
	}
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		return nil, err
	}
	// A tmpfs: overlayfs snapshots cannot live on the lab's overlay root.
	if err := syscall.Mount("ctrd", dir, "tmpfs", 0, "mode=0755"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	d := &Daemon{Dir: dir, Sock: filepath.Join(dir, "c.sock"), CtrBin: filepath.Join(o.BinDir, "ctr"), binDir: o.BinDir}
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()
	level, agentParams := "info", ""
	if o.Debug {
		level = "debug"
	}
	if o.AgentLogLevel != "" {
		agentParams = fmt.Sprintf("kernel_params = \"-- -log-level %s -quiet-console\"\n", o.AgentLogLevel)
	}
	conf := fmt.Sprintf(`[hypervisor]
kernel = %q
image = %q
runc_image = %q
default_vcpus = %d
default_memory = %d
boot_timeout = %q
console_log = %v
%s%s[runtime]
log_level = %q
work_dir = %q
rootfs_cache_dir = %q
`, filepath.Join(o.ShimDir, "guest/vmlinux"), filepath.Join(o.ShimDir, "guest/root.erofs"), filepath.Join(o.ShimDir, "guest/runc.erofs"),
		o.VCPUs, o.MemoryMiB, o.BootTimeout.String(), o.Debug, agentParams, enableAnnotations(o.EnableAnnotations), level, filepath.Join(dir, "work"),
		filepath.Join(dir, ImageCache))
	if err := os.WriteFile(filepath.Join(dir, "configuration.toml"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cc := fmt.Sprintf("version = %d\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		o.ConfigVersion, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.Sock, d.Sock+".ttrpc")
	if o.CRI != nil {
		if o.ConfigVersion != 3 {
			return nil, fmt.Errorf("the CRI configuration needs containerd config version 3, not %d", o.ConfigVersion)
		}
		c := o.CRI.withDefaults(o.BinDir)
		d.cri = &c
		if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "net.d", "10-"+c.Network+".conflist"), []byte(c.CNIConfig()), 0o644); err != nil {
			return nil, err
		}
		cc = c.Config(dir, o.ShimDir)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cc), 0o644); err != nil {
		return nil, err
	}
	d.cmd = exec.Command(bin, "--config", filepath.Join(dir, "config.toml"), "--log-level", level)
	d.cmd.Env = append(os.Environ(), "PATH="+o.ShimDir+":"+o.BinDir+":"+os.Getenv("PATH")+":/usr/sbin:/usr/bin:/sbin:/bin",
		"STRATOVIRT_CONF_FILE="+filepath.Join(dir, "configuration.toml"))
	d.cmd.Stdout, d.cmd.Stderr = o.Log, o.Log
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	for i := 0; ; i++ {
		_, err := d.Ctr(10*time.Second, "", "version")
		if err == nil && d.cri != nil {
			_, err = d.Crictl(10*time.Second, "version")
		}
		if err == nil {
			return d, nil
		} else if i > 100 {
			return nil, fmt.Errorf("containerd did not answer: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Import writes OCIImage's image and imports it as Image.
func (d *Daemon) Import() error { return d.importImage(OCIImage, Image, 60*time.Second) }

// ImportBig writes BigOCIImage's image and imports it as BigImage.
func (d *Daemon) ImportBig() error { return d.importImage(BigOCIImage, BigImage, 5*time.Minute) }

// importImage writes an image layout tarball with write and imports it
// as ref.
func (d *Daemon) importImage(write func(path, ref string) error, ref string, timeout time.Duration) error {
	img := filepath.Join(d.Dir, "image.tar")
	if err := write(img, ref); err != nil {
		return err
	}
	defer os.Remove(img)
	if out, err := d.Ctr(timeout, "", "images", "import", img); err != nil {
		return fmt.Errorf("ctr images import %s: %v\n%s", ref, err, out)
	}
	return nil
}

// ShimConfigWith writes the shim's configuration with key in section
// ("hypervisor", "runtime") set to the string value, replacing the line
// the daemon's configuration has or adding one, as
// configuration-NAME.toml, and returns its path, for `ctr run
// --runtime-config-path`.
func (d *Daemon) ShimConfigWith(name, section, key, value string) (string, error) {
	b, err := os.ReadFile(filepath.Join(d.Dir, "configuration.toml"))
	if err != nil {
		return "", err
	}
	conf, err := setTOMLString(string(b), section, key, value)
	if err != nil {
		return "", err
	}
	p := filepath.Join(d.Dir, "configuration-"+name+".toml")
	return p, os.WriteFile(p, []byte(conf), 0o644)
}

// setTOMLString sets key = "value" in section of conf, a flat TOML file
// of [section] headers and one key a line, as the daemon writes it.
func setTOMLString(conf, section, key, value string) (string, error) {
	line := fmt.Sprintf("%s = %q", key, value)
	var out []string
	in, found, done := false, false, false
	for _, l := range strings.Split(conf, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			if in && !done {
				out = append(out, line)
				done = true
			}
			in = t == "["+section+"]"
			found = found || in
		} else if in && !done {
			if k, _, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == key {
				out = append(out, line)
				done = true
				continue
			}
		}
		out = append(out, l)
	}
	if !found {
		return "", fmt.Errorf("configuration has no [%s] section", section)
	}
	if !done {
		// The section is the last one: end it with the line, before the
		// file's final newline.
		if n := len(out); n > 0 && out[n-1] == "" {
			out = append(out[:n-1], line, "")
		} else {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n"), nil
}

// Ctr runs ctr (in Namespace) with stdin and returns its combined output.
func (d *Daemon) Ctr(timeout time.Duration, stdin string, args ...string) (string, error) {
	return d.ctrIn(Namespace, timeout, stdin, args...)
}

// ctrIn runs ctr in namespace ns.
func (d *Daemon) ctrIn(ns string, timeout time.Duration, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.CtrBin, append([]string{"-a", d.Sock, "-n", ns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Stop ends containerd (SIGTERM, SIGKILL after 20 s) and removes its
// directory with everything mounted under it. With CRI it first stops
// and removes the pods that are left, and afterwards deletes the CNI
// bridge and its address leases.
func (d *Daemon) Stop() {
	d.stop.Do(func() {
		if d.cri != nil && d.cmd != nil {
			d.removePods()
		}
		if d.cmd != nil && d.cmd.Process != nil {
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
		exec.Command("sh", "-c", "umount -R "+d.Dir+"/* 2>/dev/null; true").Run()
		syscall.Unmount(d.Dir, syscall.MNT_DETACH)
		os.RemoveAll(d.Dir)
		if d.cri != nil {
			d.cri.cleanNetwork()
		}
	})
}

// ExitCode is the exit status in err from Ctr (0 for nil, -1 when ctr
// did not exit by itself).
func ExitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// ImageCache is the shim's rootfs_cache_dir under a Daemon's Dir.
const ImageCache = "image-cache"

// CacheLeftovers lists what the shared image cache in dir must not keep
// once no container runs: a build's mount or half-built file, or a
// container's link to a cached image (its link count above 1). The
// images themselves stay for the next container.
func CacheLeftovers(dir string) []string {
	var l []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, dir+"/") {
			l = append(l, "cache mount: "+line)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st syscall.Stat_t
		switch {
		case strings.Contains(e.Name(), ".tmp-"):
			l = append(l, "cache: half-built "+p)
		case strings.HasSuffix(e.Name(), ".ext4") && syscall.Stat(p, &st) == nil && st.Nlink > 1:
			l = append(l, fmt.Sprintf("cache: %s still has %d links", p, st.Nlink))
		}
	}
	return l
}
