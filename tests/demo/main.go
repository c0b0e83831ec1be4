// Command demo is the README's main job: it boots a microVM with
// cmd/stratovirt (the Debian cloud kernel and a busybox initramfs) and
// shows the guest's console, then runs a container in a microVM: it
// starts containerd 2.4.2 (from make deps) with a private root and the
// stratovirt shim, imports a locally built busybox image and runs
// `ctr run --rm --runtime io.containerd.stratovirt.v2 ... echo ...`,
// printing the output and timings. On a host whose KVM cannot boot Linux
// it prepares everything on the host and runs itself inside the lab.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
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
	container := flag.Bool("container", true, "also run a container in a microVM through containerd and the shim")
	shimDir := flag.String("shim-dir", "", "(internal) prepared shim and guest image")
	debug := flag.Bool("debug", false, "run containerd and the shim at debug level, the agent at trace (runc --debug), and print their log: the shim's, the agent's and runc's phase timings")
	flag.Parse()
	os.Exit(run(*vmm, *smp, *mem, *initrd, *container, *shimDir, *debug))
}

func run(vmm string, smp int, mem, initrd string, container bool, shimDir string, debug bool) int {
	vmm, _ = filepath.Abs(vmm)
	if container && shimDir == "" {
		root, err := lab.RepoRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
		dir, err := os.MkdirTemp("", "demo-shim-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		t0 := time.Now()
		fmt.Fprintln(os.Stderr, "demo: building containerd-shim-stratovirt-v2 and the guest image (make guest)")
		if err := ctrd.Build(root, dir); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "demo: built in %v\n", time.Since(t0).Round(time.Millisecond))
		shimDir = dir
	}
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
			Cmd: fmt.Sprintf("%s -vmm %s -smp %d -m %s -initrd %s -container=%v -shim-dir '%s' -debug=%v",
				self, vmm, smp, mem, initrd, container, shimDir, debug),
			Stdout: os.Stdout, Stderr: os.Stderr, Timeout: 15 * time.Minute,
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
	if !container {
		return 0
	}
	return runContainer(shimDir, debug)
}

// runContainer starts containerd 2.4.2 with the shim, imports the busybox
// image and runs one container in its own microVM.
func runContainer(shimDir string, debug bool) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: running a container needs root (containerd)")
		return 1
	}
	root, err := lab.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "\ndemo: now a container in a microVM, through containerd 2.4.2 and containerd-shim-stratovirt-v2")
	var log bytes.Buffer
	t0 := time.Now()
	d, err := ctrd.Start(ctrd.Options{BinDir: filepath.Join(root, ".cache/bin"), ConfigVersion: 3, ShimDir: shimDir, Log: &log, Debug: debug,
		AgentLogLevel: map[bool]string{true: "trace"}[debug]})
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: containerd: %v\n%s", err, log.String())
		return 1
	}
	defer d.Stop()
	tStart := time.Since(t0)
	t0 = time.Now()
	if err := d.Import(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	tImport := time.Since(t0)
	args := []string{"run", "--rm", "--runtime", ctrd.Runtime, ctrd.Image, "demo", "echo", "hello from a container in a microVM"}
	fmt.Fprintf(os.Stderr, "demo: ctr %s\n", strings.Join(args, " "))
	t0 = time.Now()
	out, err := d.Ctr(5*time.Minute, "", args...)
	tRun := time.Since(t0)
	fmt.Print(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: ctr run: %v\ncontainerd log:\n%s", err, log.String())
		return 1
	}
	fmt.Fprintf(os.Stderr, "demo: containerd up in %v, image imported in %v, ctr run --rm (VM boot, container, teardown) %v\n",
		tStart.Round(time.Millisecond), tImport.Round(time.Millisecond), tRun.Round(time.Millisecond))
	// The shim logs its own breakdown of Create.
	if m := regexp.MustCompile(`create demo: [^"]*`).FindString(log.String()); m != "" {
		fmt.Fprintf(os.Stderr, "demo: shim: %s\n", m)
	}
	if debug {
		fmt.Fprintf(os.Stderr, "demo: containerd and shim log:\n%s", log.String())
	}
	return 0
}
