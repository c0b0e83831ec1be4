package translate

import (
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
)

// GuestSource marks a bind mount's source as a path inside the guest
// (not on the host): GuestSpec passes such mounts on with the prefix
// removed. Only the paths in guestBindSources are accepted.
const GuestSource = "guest:"

// GuestResolvConf is where the agent writes the pod's DNS configuration
// (CreateSandbox), bound over /etc/resolv.conf in every pod container.
const GuestResolvConf = "/etc/resolv.conf"

var guestBindSources = map[string]bool{GuestResolvConf: true}

// FileSource marks a bind mount's source as a file the agent writes for
// the container from CreateContainerRequest.files ("file:hosts").
const FileSource = "file:"

// Names of the files copied from the host into the guest.
const (
	HostsFile    = "hosts"
	HostnameFile = "hostname"
)

// SandboxShm is the source of the /dev/shm bind of every container of a
// pod: the tmpfs the agent mounts for the sandbox (ShmStorage).
const SandboxShm = "sandbox:shm"

// ShmOptions are the pod /dev/shm tmpfs's options (containerd's 64 MiB).
var ShmOptions = []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}

// fileBind reports whether m binds a file written for the container.
func fileBind(m specs.Mount) bool {
	name, ok := strings.CutPrefix(m.Source, FileSource)
	return ok && (m.Type == "bind" || m.Type == "") && (name == HostsFile || name == HostnameFile)
}

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
	// Hosts and Hostname are the host files bound over /etc/hosts and
	// /etc/hostname (empty: none); the shim copies them into the guest.
	Hosts, Hostname string
	// Shm: /dev/shm binds the pod's shared tmpfs (SandboxShm).
	Shm bool
}

// RewriteCRIMounts replaces the bind mounts containerd's CRI plugin adds
// from the pod's sandbox directory (which the VM cannot see) with guest
// equivalents: /etc/resolv.conf binds the guest's copy (written from the
// host file through the agent), /etc/hosts and /etc/hostname bind copies
// of the host files that the agent writes for the container
// ("file:hosts", "file:hostname"), /dev/shm binds the pod's shared tmpfs
// (SandboxShm), and /dev/termination-log is dropped. Other mounts are
// left for GuestSpec to judge. spec is modified.
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
			files.Shm = true
			m = specs.Mount{Destination: "/dev/shm", Type: "bind", Source: SandboxShm,
				Options: []string{"rbind", "nosuid", "noexec", "nodev"}}
		case "/etc/hosts":
			if criFile(m.Source, "hosts") {
				files.Hosts = m.Source
				m.Source, m.Type = FileSource+HostsFile, "bind"
			}
		case "/etc/hostname":
			if criFile(m.Source, "hostname") {
				files.Hostname = m.Source
				m.Source, m.Type = FileSource+HostnameFile, "bind"
			}
		case "/dev/termination-log":
			continue
		}
		out = append(out, m)
	}
	spec.Mounts = out
	return files
}

// criFile reports whether src is the file the CRI plugin writes for a pod
// (<root>/sandboxes/<id>/<name>): only those are copied into the guest. Any
// other host file bound there stays a host bind, which the shim refuses
// like every host bind, so a bind cannot be used to copy arbitrary host
// files into a container.
func criFile(src, name string) bool {
	return filepath.Base(src) == name && filepath.Base(filepath.Dir(filepath.Dir(src))) == "sandboxes"
}

// PrivateShm turns a SandboxShm bind back into a tmpfs of the container's
// own, for a VM without the pod's shared /dev/shm. spec is modified.
func PrivateShm(spec *specs.Spec) {
	for i, m := range spec.Mounts {
		if m.Source == SandboxShm {
			spec.Mounts[i] = specs.Mount{Destination: m.Destination, Type: "tmpfs", Source: "shm", Options: ShmOptions}
		}
	}
}

// ShmStorage is the sandbox storage behind SandboxShm.
func ShmStorage() *agentv1.Storage {
	return &agentv1.Storage{Name: "shm", Source: "shm", Fstype: "tmpfs", Options: ShmOptions}
}

// TakeNetSysctls removes the net.* sysctls from a spec with a network
// namespace, existing (CNI's, a pod's) or new, and returns them: inside
// the VM that namespace is the guest's own (GuestSpec), where runc
// refuses them, so the agent applies them to the VM once
// (CreateSandbox). A spec without one shares the host's network, where
// runc refuses them as well, and keeps them.
func TakeNetSysctls(spec *specs.Spec) map[string]string {
	if spec.Linux == nil || len(spec.Linux.Sysctl) == 0 {
		return nil
	}
	joins := false
	for _, n := range spec.Linux.Namespaces {
		joins = joins || n.Type == specs.NetworkNamespace
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
