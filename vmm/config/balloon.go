package config

import (
	"os"
	"path/filepath"
)

// Balloon is the virtio-balloon device (-balloon
// [deflate-on-oom=B][,free-page-reporting=B]; JSON "balloon":
// {"deflate_on_oom": B, "free_page_reporting": B}). Balloon and huge pages
// exclude each other: released 4 KiB pages cannot be punched out of huge
// pages.
type Balloon struct {
	DeflateOnOOM bool `json:"deflate_on_oom"`
	// FreePageReporting lets the guest report the memory it frees, which
	// the host then releases (virtio's free page reporting).
	FreePageReporting bool `json:"free_page_reporting,omitempty"`
}

// validateBalloon checks that the balloon is not combined with
// hugetlbfs-backed memory.
func (c *VMConfig) validateBalloon() []error {
	if c.Balloon == nil || c.Machine.MemPath == "" {
		return nil
	}
	if _, huge, err := PageSizeAt(hugePathDir(c.Machine.MemPath)); err == nil && huge {
		return []error{errorf("-balloon", "balloon", "the balloon device cannot be used with huge pages (-mem-path %q is on hugetlbfs)", c.Machine.MemPath)}
	}
	return nil
}

// hugePathDir returns path if it exists, else its directory (a -mem-path
// file may be created at start).
func hugePathDir(path string) string {
	if _, err := os.Stat(path); err != nil {
		return filepath.Dir(path)
	}
	return path
}
