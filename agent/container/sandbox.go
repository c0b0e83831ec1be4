package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/agent/mount"
)

// ResolvConf renders resolv.conf contents.
func ResolvConf(servers, searches, options []string) string {
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.String()
}

// SysctlPath maps a dotted sysctl name to its /proc/sys file, refusing
// names that could leave /proc/sys.
func SysctlPath(name string) (string, error) {
	if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("sysctl %q: %w", name, ErrInvalid)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r)) {
			return "", fmt.Errorf("sysctl %q: %w", name, ErrInvalid)
		}
	}
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/")), nil
}

func validLine(s string) bool {
	return s != "" && !strings.ContainsAny(s, "\n\r\x00")
}

// CreateSandbox applies the sandbox-wide settings and mounts the shared
// storages at <state>/sandbox/<name> (OCI mounts use "sandbox:<name>").
func (m *Manager) CreateSandbox(ctx context.Context, req *agentv1.CreateSandboxRequest) error {
	for _, l := range [][]string{req.GetDnsServers(), req.GetDnsSearches(), req.GetDnsOptions()} {
		for _, s := range l {
			if !validLine(s) || strings.ContainsAny(s, " \t") {
				return fmt.Errorf("DNS entry %q: %w", s, ErrInvalid)
			}
		}
	}
	if sid := req.GetSandboxId(); sid != "" && !stream.ValidID(sid) {
		return fmt.Errorf("sandbox id %q: %w", sid, ErrInvalid)
	}
	paths := map[string]string{}
	keys := make([]string, 0, len(req.GetSysctls()))
	for k, v := range req.GetSysctls() {
		p, err := SysctlPath(k)
		if err != nil {
			return err
		}
		if strings.ContainsAny(v, "\n\x00") {
			return fmt.Errorf("sysctl %s value %q: %w", k, v, ErrInvalid)
		}
		paths[k] = p
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if h := req.GetHostname(); h != "" {
		if len(h) > 64 || !validLine(h) {
			return fmt.Errorf("hostname %q: %w", h, ErrInvalid)
		}
		if m.cfg.Guest {
			if err := unix.Sethostname([]byte(h)); err != nil {
				return fmt.Errorf("set hostname: %w", err)
			}
		}
	}
	if m.cfg.Guest {
		for _, k := range keys {
			if err := os.WriteFile(paths[k], []byte(req.GetSysctls()[k]), 0); err != nil {
				return fmt.Errorf("sysctl %s: %w", k, err)
			}
		}
	}
	if len(req.GetDnsServers())+len(req.GetDnsSearches())+len(req.GetDnsOptions()) > 0 {
		conf := ResolvConf(req.GetDnsServers(), req.GetDnsSearches(), req.GetDnsOptions())
		if err := os.MkdirAll(filepath.Dir(m.cfg.ResolvConf), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(m.cfg.ResolvConf, []byte(conf), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", m.cfg.ResolvConf, err)
		}
	}
	m.mu.Lock()
	m.sandboxID = req.GetSandboxId()
	m.mu.Unlock()
	for _, s := range req.GetStorages() {
		if !stream.ValidID(s.GetName()) {
			return fmt.Errorf("sandbox storage name %q: %w", s.GetName(), ErrInvalid)
		}
		p := filepath.Join(m.cfg.StateDir, "sandbox", s.GetName())
		m.mu.Lock()
		for _, have := range m.sandbox {
			if have == p {
				m.mu.Unlock()
				return fmt.Errorf("sandbox storage %q: %w", s.GetName(), ErrExists)
			}
		}
		m.mu.Unlock()
		if err := mount.Mount(ctx, m.cfg.SysBlock, s, p); err != nil {
			return err
		}
		m.mu.Lock()
		m.sandbox = append(m.sandbox, p)
		m.mu.Unlock()
	}
	return nil
}

// DestroySandbox removes every container and unmounts the sandbox storages.
func (m *Manager) DestroySandbox(ctx context.Context) error {
	first := m.RemoveAll(ctx)
	m.mu.Lock()
	mounts := m.sandbox
	m.sandbox = nil
	m.mu.Unlock()
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := mount.Unmount(mounts[i]); err != nil && first == nil {
			first = err
		}
	}
	return first
}
