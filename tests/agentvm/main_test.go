// Package agentvm is the lab test of the guest image (`make guest`) under
// cmd/stratovirt: for each vsock backend (vhost, unix) it boots the
// initramfs with the runc image, and with vhost also the root image (what
// the shim boots by default), with a busybox ext4 rootfs on virtio-blk, connects to the agent through
// runtime/sandbox (the shim's client code) and vmm/vsockdial, runs
// `echo hello` and `sh -c 'exit 3'` as containers, checks their output and
// exit status, shuts the VM down and checks that nothing is left behind
// (processes, sockets). TestMain builds everything on the host; the tests
// run in the nested-KVM lab unless the host's KVM can boot Linux.
package agentvm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stratovirt-go/stratovirt/tests/initramfs"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

// Set by TestMain on the host; inherited by the test binary in the lab.
const (
	envVMM    = "AGENTVM_TEST_VMM"
	envKernel = "AGENTVM_TEST_KERNEL"
	envInitrd = "AGENTVM_TEST_INITRD"
	envRootfs = "AGENTVM_TEST_ROOTFS"
	envRunc   = "AGENTVM_TEST_RUNC"
	envRoot   = "AGENTVM_TEST_ROOT"
)

func TestMain(m *testing.M) {
	if os.Getenv(envVMM) != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "agentvm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentvm tests:", err)
		os.Exit(1)
	}
	if err := prepare(dir); err != nil {
		fmt.Fprintln(os.Stderr, "agentvm tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := lab.Exec(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// prepare builds, under dir, the VMM, the guest image (through `make
// guest`, so that the test boots exactly what the Makefile ships) and the
// busybox rootfs image, and exports their paths.
func prepare(dir string) error {
	root, err := lab.RepoRoot()
	if err != nil {
		return err
	}
	vmm := filepath.Join(dir, "stratovirt")
	guest := filepath.Join(dir, "guest")
	for _, c := range []*exec.Cmd{
		exec.Command("go", "build", "-o", vmm, "./cmd/stratovirt"),
		exec.Command("make", "--no-print-directory", "guest", "GUEST_DIR="+guest),
	} {
		c.Dir = root
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", c, err, out)
		}
	}
	img := filepath.Join(dir, "rootfs.ext4")
	if err := busyboxExt4(filepath.Join(dir, "rootfs"), img); err != nil {
		return err
	}
	os.Setenv(envVMM, vmm)
	os.Setenv(envKernel, filepath.Join(guest, "vmlinux"))
	os.Setenv(envInitrd, filepath.Join(guest, "initramfs.cpio"))
	os.Setenv(envRootfs, img)
	os.Setenv(envRunc, filepath.Join(guest, "runc.erofs"))
	os.Setenv(envRoot, filepath.Join(guest, "root.erofs"))
	return nil
}

// applets become symlinks to busybox in the rootfs.
var applets = []string{"sh", "echo", "cat", "true", "false", "sleep", "ls"}

// busyboxExt4 fills tree with a static busybox and the directories runc
// mounts on, and writes it as a 32 MiB ext4 image with mkfs.ext4 -d.
func busyboxExt4(tree, img string) error {
	bb, err := initramfs.BusyboxPath()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "etc", "root", "run"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "bin/busybox"), data, 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(tree, "bin", a)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		return err
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", "root_owner=0:0", "-d", tree, img, "32M").CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 -d (e2fsprogs): %v\n%s", err, out)
	}
	return nil
}
