package lab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// GuestKernel returns the Debian cloud kernel that nested guests boot
// (bzImage, LZ4-compressed, CONFIG_PVH=y).
func GuestKernel() (Kernel, error) { return FindKernel("cloud-amd64") }

// Vmlinux returns the uncompressed ELF vmlinux inside the guest kernel's
// bzImage, extracting it once next to the package (as the kernel tree's
// scripts/extract-vmlinux does: find the LZ4 legacy-frame magic and
// decompress from there).
func Vmlinux() (string, error) {
	k, err := GuestKernel()
	if err != nil {
		return "", err
	}
	out := filepath.Join(k.Dir, "vmlinux")
	if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
		return out, nil
	}
	img, err := os.ReadFile(k.Image)
	if err != nil {
		return "", err
	}
	lz4, err := exec.LookPath("lz4")
	if err != nil {
		return "", fmt.Errorf("lz4 not found; install Debian's lz4 (`make deps` does)")
	}
	magic := []byte{0x02, 0x21, 0x4c, 0x18}
	for off := 0; ; {
		i := bytes.Index(img[off:], magic)
		if i < 0 {
			return "", fmt.Errorf("no LZ4 payload with an ELF inside %s", k.Image)
		}
		off += i
		cmd := exec.Command(lz4, "-dc")
		cmd.Stdin = bytes.NewReader(img[off:])
		// lz4 complains about the bytes after the payload; the output
		// is complete anyway, so judge by what came out.
		data, _ := cmd.Output()
		if len(data) > 4 && bytes.Equal(data[:4], []byte("\x7fELF")) {
			tmp := out + ".tmp"
			if err := os.WriteFile(tmp, data, 0o644); err != nil {
				return "", err
			}
			return out, os.Rename(tmp, out)
		}
		off++
	}
}
