// Command demo is the README's main job: it boots a microVM with
// cmd/stratovirt (the Debian cloud kernel and a busybox initramfs), shows
// the guest's console and exits with the VMM's status. On a host whose KVM
// cannot boot Linux it runs itself inside the lab.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/stratovirt-go/stratovirt/tests/initramfs"
	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/tests/payload"
)

const initScript = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
/bin/boot-marker
echo
echo "Hello from a stratovirt-go microVM"
echo "  kernel:  $(uname -r)"
echo "  cpus:    $(nproc)"
echo "  memory:  $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo)"
echo "  uptime:  $(cut -d' ' -f1 /proc/uptime) s since the kernel started"
echo
poweroff -f
`

func main() {
	vmm := flag.String("vmm", "bin/stratovirt", "the VMM binary")
	smp := flag.Int("smp", 2, "vCPUs")
	mem := flag.String("m", "512M", "memory")
	initrd := flag.String("initrd", "", "(internal) prepared initramfs")
	flag.Parse()
	os.Exit(run(*vmm, *smp, *mem, *initrd))
}

func run(vmm string, smp int, mem, initrd string) int {
	vmm, _ = filepath.Abs(vmm)
	if initrd == "" {
		dir, err := os.MkdirTemp("", "demo-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		initrd = filepath.Join(dir, "initramfs.cpio")
		marker := map[string][]byte{"bin/boot-marker": payload.UserPortWrite(0x3f0, 123)}
		if err := initramfs.Busybox(initrd, initScript, marker); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	where, why := lab.Where()
	if where == "needs-lab" {
		fmt.Fprintf(os.Stderr, "demo: this host's KVM cannot boot Linux (%s); booting the microVM inside the nested-KVM lab\n", why)
		self, _ := os.Executable()
		res, err := lab.Run(context.Background(), lab.Options{
			Cmd:    fmt.Sprintf("%s -vmm %s -smp %d -m %s -initrd %s", self, vmm, smp, mem, initrd),
			Stdout: os.Stdout, Stderr: os.Stderr,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return res.ExitCode
	}
	fmt.Fprintf(os.Stderr, "demo: booting on %s KVM (%s)\n", where, why)
	k, err := lab.GuestKernel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := exec.Command(vmm, "-name", "demo", "-kernel", k.Image, "-initrd", initrd, "-smp", fmt.Sprint(smp), "-m", mem,
		"-serial", "stdio", "-append", "console=ttyS0 quiet panic=1 reboot=k")
	cmd.Env = append(os.Environ(), "STRATOVIRT_LOG_LEVEL=info")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	fmt.Fprintf(os.Stderr, "demo: %s\n", cmd.String())
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "demo: the guest powered off; the VMM exited 0")
	return 0
}
