package translate

import (
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// GuestSource marks a bind mount's source as a path inside the guest
// (not on the host): GuestSpec passes such mounts on with the prefix
// removed. Only the paths in guestBindSources are accepted.
const GuestSource = "guest:"

// GuestResolvConf is where the agent writes the pod's DNS configuration
// (CreateSandbox), bound over /etc/resolv.conf in every pod container.
const GuestResolvConf = "/etc/resolv.conf"

var guestBindSources = map[string]bool{GuestResolvConf: true}

// guestBind reports whether m binds an allowed guest path, and which.
func guestBind(m specs.Mount) (string, bool) {
	p, ok := strings.CutPrefix(m.Source, GuestSource)
	if !ok || m.Type != "bind" && m.Type != "" {
		return "", false
	}
	return p, guestBindSources[p]
}

// CRIFiles are the host files containerd's CRI plugin binds into pod
// containers, found by RewriteCRIMounts.
type CRIFiles struct {
	// ResolvConf is the pod's resolv.conf on the host (empty: none).
	ResolvConf string
}

// RewriteCRIMounts replaces the bind mounts containerd's CRI plugin adds
// from the pod's sandbox directory (which the VM cannot see) with guest
// equivalents: /etc/resolv.conf binds the guest's copy (written from the
// host file through the agent), /dev/shm becomes a tmpfs, and
// /etc/hosts, /etc/hostname and /dev/termination-log are dropped (the
// image's files stay; the hostname is set in the guest's UTS namespace).
// Other mounts are left for GuestSpec to judge. spec is modified.
func RewriteCRIMounts(spec *specs.Spec) CRIFiles {
	var files CRIFiles
	out := spec.Mounts[:0]
	for _, m := range spec.Mounts {
		if m.Type != "bind" && m.Type != "" || !filepath.IsAbs(m.Source) {
			out = append(out, m)
			continue
		}
		switch m.Destination {
		case "/etc/resolv.conf":
			files.ResolvConf = m.Source
			m.Source = GuestSource + GuestResolvConf
			m.Type = "bind"
			m.Options = []string{"rbind", "ro", "nosuid", "nodev", "noexec"}
		case "/dev/shm":
			m = specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
				Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}
		case "/etc/hosts", "/etc/hostname", "/dev/termination-log":
			continue
		}
		out = append(out, m)
	}
	spec.Mounts = out
	return files
}

// TakeNetSysctls removes the net.* sysctls from a spec that joins an
// existing network namespace (CNI's, a pod's) and returns them: inside
// the VM that namespace is the guest's own, where runc refuses them, so
// the agent applies them to the VM once (CreateSandbox).
func TakeNetSysctls(spec *specs.Spec) map[string]string {
	if spec.Linux == nil || len(spec.Linux.Sysctl) == 0 {
		return nil
	}
	joins := false
	for _, n := range spec.Linux.Namespaces {
		joins = joins || n.Type == specs.NetworkNamespace && n.Path != ""
	}
	if !joins {
		return nil
	}
	out := map[string]string{}
	for k, v := range spec.Linux.Sysctl {
		if strings.HasPrefix(k, "net.") {
			out[k] = v
			delete(spec.Linux.Sysctl, k)
		}
	}
	return out
}
