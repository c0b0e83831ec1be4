package ctrd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	// PauseImage is the pinned sandbox image of a CRI daemon;
	// ImportCRIImages imports PauseOCIImage's image under this name.
	PauseImage = "registry.k8s.io/pause:3.10"
	// CRINamespace is the containerd namespace of the CRI plugin.
	CRINamespace = "k8s.io"
	// Handler is the CRI runtime handler of the shim (crictl runp
	// --runtime); "runc" is io.containerd.runc.v2.
	Handler = "stratovirt"
)

// CRI configures containerd's CRI plugin (Options.CRI). Zero fields take
// the defaults named below.
type CRI struct {
	// CNIBinDir holds the CNI plugins (bridge, host-local, portmap);
	// default BinDir/../cni/bin, which is .cache/cni/bin for .cache/bin.
	CNIBinDir string
	// Network, Bridge and Subnet are the CNI bridge network's name, the
	// host bridge and the pod subnet (default svbench, svbench0,
	// 10.88.9.0/24); two daemons running at once need different ones.
	Network, Bridge, Subnet string
	// SandboxImage is the pinned pause image (default PauseImage).
	SandboxImage string
	// RegistryConfigPath is the registry hosts directory (certs.d) for
	// mirrors; empty: none.
	RegistryConfigPath string
	// Annotations are the annotation patterns the stratovirt handler
	// passes on from pods and containers to the shim.
	Annotations []string
}

func (c CRI) withDefaults(binDir string) CRI {
	if c.CNIBinDir == "" {
		c.CNIBinDir = filepath.Join(filepath.Dir(binDir), "cni/bin")
	}
	if c.Network == "" {
		c.Network = "svbench"
	}
	if c.Bridge == "" {
		c.Bridge = "svbench0"
	}
	if c.Subnet == "" {
		c.Subnet = "10.88.9.0/24"
	}
	if c.SandboxImage == "" {
		c.SandboxImage = PauseImage
	}
	return c
}

// Config is containerd's version 3 configuration for a daemon in dir
// (root, state, sockets c.sock and c.sock.ttrpc, CNI configuration in
// net.d and the shim's configuration.toml, as Start lays them out): CRI
// with the runc (default) and stratovirt handlers, the shim from
// shimDir, the CNI bridge and the pinned sandbox image. c's fields must
// be filled (Start fills the defaults).
func (c CRI) Config(dir, shimDir string) string {
	var reg, ann string
	if c.RegistryConfigPath != "" {
		reg = fmt.Sprintf("  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = %q\n", c.RegistryConfigPath)
	}
	if len(c.Annotations) > 0 {
		list := tomlList(c.Annotations, "'")
		ann = fmt.Sprintf("      pod_annotations = [%s]\n      container_annotations = [%s]\n", list, list)
	}
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[5]q
%[6]s[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[7]q]
    conf_dir = %[8]q
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%[9]s]
      runtime_type = '%[10]s'
      runtime_path = %[11]q
      sandboxer = 'podsandbox'
%[12]s      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%[9]s.options]
        ConfigPath = %[13]q
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "c.sock"), filepath.Join(dir, "c.sock.ttrpc"),
		c.SandboxImage, reg, c.CNIBinDir, filepath.Join(dir, "net.d"),
		Handler, Runtime, filepath.Join(shimDir, "containerd-shim-stratovirt-v2"), ann, filepath.Join(dir, "configuration.toml"))
}

// CNIConfig is the CNI network list: a bridge (gateway, no masquerade,
// hairpin) with host-local addresses from Subnet, and portmap.
func (c CRI) CNIConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, c.Network, c.Bridge, c.Subnet)
}

// tomlList quotes each of items with q and joins them with ", ".
func tomlList(items []string, q string) string {
	quoted := make([]string, len(items))
	for i, s := range items {
		quoted[i] = q + s + q
	}
	return strings.Join(quoted, ", ")
}

// enableAnnotations is the shim's enable_annotations line ("" for none).
func enableAnnotations(names []string) string {
	if len(names) == 0 {
		return ""
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	return "enable_annotations = [" + strings.Join(quoted, ", ") + "]\n"
}

// cleanNetwork deletes the bridge and host-local's address leases.
func (c *CRI) cleanNetwork() {
	exec.Command("ip", "link", "del", c.Bridge).Run()
	os.RemoveAll(filepath.Join("/var/lib/cni/networks", c.Network))
}

// ImportCRIImages imports the pause image (PauseOCIImage as the
// configured sandbox image) and the busybox image (OCIImage as Image)
// into the CRI namespace, so that pods start without a registry.
func (d *Daemon) ImportCRIImages() error {
	if d.cri == nil {
		return fmt.Errorf("containerd in %s runs without CRI", d.Dir)
	}
	for _, img := range []struct {
		ref   string
		write func(path, ref string) error
	}{{d.cri.SandboxImage, PauseOCIImage}, {Image, OCIImage}} {
		p := filepath.Join(d.Dir, "image.tar")
		if err := img.write(p, img.ref); err != nil {
			return err
		}
		out, err := d.ctrIn(CRINamespace, 60*time.Second, "", "images", "import", p)
		os.Remove(p)
		if err != nil {
			return fmt.Errorf("ctr -n %s images import %s: %v\n%s", CRINamespace, img.ref, err, out)
		}
	}
	return nil
}

// Crictl runs crictl (BinDir/crictl) against the daemon and returns its
// standard output; on error it returns standard output and error, and
// the error carries the arguments and crictl's message.
func (d *Daemon) Crictl(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ep := "unix://" + d.Sock
	cmd := exec.CommandContext(ctx, filepath.Join(d.binDir, "crictl"),
		append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", timeout.String()}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String() + errb.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// removePods stops and removes every pod that is left (those of a failed
// run), so that no VM, shim or network namespace outlives the daemon.
func (d *Daemon) removePods() {
	out, err := d.Crictl(60*time.Second, "pods", "-q")
	if err != nil {
		return
	}
	for _, id := range strings.Fields(out) {
		d.Crictl(60*time.Second, "stopp", id)
		d.Crictl(60*time.Second, "rmp", "-f", id)
	}
}
