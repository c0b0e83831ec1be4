package initramfs

import (
	"fmt"
	"os"
	"os/exec"
	slashpath "path"
	"sort"
)

// BusyboxPath returns the static busybox binary (Debian's busybox-static).
func BusyboxPath() (string, error) {
	if p, err := exec.LookPath("busybox"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/bin/busybox"); err == nil {
		return "/bin/busybox", nil
	}
	return "", fmt.Errorf("busybox not found; install Debian's busybox-static (`make deps` does)")
}

// Busybox writes an initramfs holding a static busybox with every applet
// linked under /bin, init as /init, and extra files (path -> content,
// mode 0755).
func Busybox(path, init string, extra map[string][]byte) error {
	bbPath, err := BusyboxPath()
	if err != nil {
		return err
	}
	bb, err := os.ReadFile(bbPath)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	applets, err := exec.Command(bbPath, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	defer f.Close()
	w := NewWriter(f)
	for _, d := range []string{"bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "root"} {
		w.Dir(d)
	}
	w.File("bin/busybox", 0o755, bb)
	for _, a := range splitLines(string(applets)) {
		if a != "busybox" {
			w.Symlink("bin/"+a, "busybox")
		}
	}
	w.File("init", 0o755, []byte(init))
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	sort.Strings(names)
	// The kernel's unpacker does not create missing parent directories.
	made := map[string]bool{"bin": true, "sbin": true, "dev": true, "proc": true, "sys": true, "tmp": true, "etc": true, "root": true}
	for _, n := range names {
		var parts []string
		for d := slashpath.Dir(n); d != "." && d != "/" && !made[d]; d = slashpath.Dir(d) {
			parts = append(parts, d)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			w.Dir(parts[i])
			made[parts[i]] = true
		}
	}
	for _, n := range names {
		w.File(n, 0o755, extra[n])
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write initramfs %s: %w", path, err)
	}
	return f.Close()
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
