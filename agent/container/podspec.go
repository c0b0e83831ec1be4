package container

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
)

// Limits on the files of one CreateContainer request.
const (
	MaxFiles    = 8
	MaxFileSize = 64 << 10
)

// SandboxNamespace is the namespace path that joins the sandbox
// container's namespace of the same type (a pod's IPC, UTS or PID).
const SandboxNamespace = "sandbox:"

// maxSunPath is the longest unix socket path (sun_path less its NUL).
const maxSunPath = 107

// nsFiles names each namespace type's file under /proc/<pid>/ns.
var nsFiles = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace: "pid", specs.NetworkNamespace: "net", specs.MountNamespace: "mnt",
	specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts", specs.UserNamespace: "user",
	specs.CgroupNamespace: "cgroup", specs.TimeNamespace: "time",
}

// consolePath is where runc hands a terminal process's pty master over:
// a short hashed name, since <state>/containers/<id>/exec-<id>.console
// with CRI's 64-character ids exceeds the 108-byte socket path limit.
func consolePath(stateDir, cid, name string) string {
	h := sha256.Sum256([]byte(cid + "/" + name))
	base := hex.EncodeToString(h[:8]) + ".sock"
	p := filepath.Join(stateDir, "tty", base)
	if len(p) > maxSunPath {
		p = filepath.Join(os.TempDir(), "sv-tty-"+base)
	}
	return p
}

// writeFiles writes a container's files into dir and returns their
// paths by name.
func writeFiles(dir string, files []*agentv1.File) (map[string]string, error) {
	if len(files) > MaxFiles {
		return nil, fmt.Errorf("%d files (at most %d): %w", len(files), MaxFiles, ErrInvalid)
	}
	out := map[string]string{}
	for _, f := range files {
		name := f.GetName()
		if !stream.ValidID(name) || out[name] != "" {
			return nil, fmt.Errorf("file name %q: %w", name, ErrInvalid)
		}
		if len(f.GetContent()) > MaxFileSize {
			return nil, fmt.Errorf("file %s: %d bytes (at most %d): %w", name, len(f.GetContent()), MaxFileSize, ErrInvalid)
		}
		mode := os.FileMode(f.GetMode() & 0o777)
		if mode == 0 {
			mode = 0o644
		}
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, err
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, f.GetContent(), mode); err != nil {
			return nil, fmt.Errorf("file %s: %w", name, err)
		}
		if err := os.Chmod(p, mode); err != nil { // not masked by the umask
			return nil, fmt.Errorf("file %s: %w", name, err)
		}
		out[name] = p
	}
	return out, nil
}

// joinSandboxNamespaces replaces every SandboxNamespace path of spec
// with the namespace of the sandbox container's init process.
func (m *Manager) joinSandboxNamespaces(id string, spec *specs.Spec) error {
	if spec.Linux == nil {
		return nil
	}
	for i, n := range spec.Linux.Namespaces {
		if n.Path != SandboxNamespace {
			continue
		}
		file, ok := nsFiles[n.Type]
		if !ok {
			return fmt.Errorf("namespace type %q: %w", n.Type, ErrInvalid)
		}
		pid, err := m.sandboxPid(id)
		if err != nil {
			return fmt.Errorf("join the sandbox's %s namespace: %w", n.Type, err)
		}
		spec.Linux.Namespaces[i].Path = filepath.Join("/proc", strconv.Itoa(pid), "ns", file)
	}
	return nil
}

// sandboxPid is the pid of the sandbox container's live init process.
func (m *Manager) sandboxPid(id string) (int, error) {
	m.mu.Lock()
	sid := m.sandboxID
	sc := m.containers[sid]
	m.mu.Unlock()
	if sid == "" || sid == id || sc == nil {
		return 0, fmt.Errorf("no sandbox container (sandbox %q): %w", sid, ErrPrecondition)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.init == nil || sc.init.pid == 0 || sc.init.exited() {
		return 0, fmt.Errorf("sandbox container %q is not running: %w", sid, ErrPrecondition)
	}
	return sc.init.pid, nil
}
