// Package net benchmarks our virtio-net against QEMU microvm's
// virtio-net-device on the same kind of tap (vhost=off, and vhost=on when
// /dev/vhost-net exists), inside one lab run (or on the host when its KVM
// boots Linux): TCP throughput guest→host and host→guest and TCP
// round-trip latency, several interleaved runs each, same guest kernel
// (Debian cloud), initramfs and transfer size. The guest runs the static
// Go benchtool as a server; the same binary on the host side of the tap
// (in a network namespace per VM) drives and times every measurement.
// It prints a Markdown table of medians and ratios.
//
// It runs only when NET_BENCH=1 (it takes a few minutes); otherwise only
// the harness's self-checks run:
//
//	NET_BENCH=1 go test ./tests/bench/net/ -v -count=1 -timeout 30m
//
// NET_BENCH_SIZE (MiB per transfer, default 32) and NET_BENCH_RUNS
// (else BENCH_RUNS, else 5) tune it; NET_BENCH_PROFILE=DIR has our VMMs
// write CPU profiles there.
package net

import (
	"bufio"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/stratovirt-go/stratovirt/tests/initramfs"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

//go:embed init.sh
var initScript string

// modules are the guest kernel modules, dependencies first.
var modules = []string{"virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover", "virtio_net"}

// Files are what Prepare built on the host.
type Files struct {
	VMM, Initrd, Kernel, Tool string
}

var envNames = [4]string{"NET_BENCH_VMM", "NET_BENCH_INITRD", "NET_BENCH_KERNEL", "NET_BENCH_TOOL"}

func (f *Files) fields() [4]*string { return [4]*string{&f.VMM, &f.Initrd, &f.Kernel, &f.Tool} }

// FromEnv returns the Files exported by SetEnv.
func FromEnv() (Files, bool) {
	var f Files
	for i, p := range f.fields() {
		*p = os.Getenv(envNames[i])
	}
	return f, f.VMM != ""
}

// SetEnv exports f for the test binary re-executed in the lab.
func (f Files) SetEnv() {
	for i, p := range f.fields() {
		os.Setenv(envNames[i], *p)
	}
}

// Prepare builds stratovirt and benchtool (static) and writes the
// initramfs in dir.
func Prepare(dir string) (Files, error) {
	var f Files
	root, err := lab.RepoRoot()
	if err != nil {
		return f, err
	}
	f.VMM = filepath.Join(dir, "stratovirt")
	f.Tool = filepath.Join(dir, "benchtool")
	for _, b := range []struct{ out, pkg string }{{f.VMM, "./cmd/stratovirt"}, {f.Tool, "./tests/bench/net/benchtool"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return f, fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	k, err := lab.FindKernel("cloud-amd64")
	if err != nil {
		return f, err
	}
	f.Kernel = k.Image
	extra := map[string][]byte{}
	if extra["benchtool"], err = os.ReadFile(f.Tool); err != nil {
		return f, err
	}
	for _, m := range modules {
		p, err := findModule(k.ModulesDir(), m)
		if err != nil {
			return f, err
		}
		if extra[m+".ko"], err = os.ReadFile(filepath.Join(k.ModulesDir(), p)); err != nil {
			return f, err
		}
	}
	f.Initrd = filepath.Join(dir, "initramfs.cpio")
	return f, initramfs.Busybox(f.Initrd, initScript, extra)
}

// findModule returns the path of name.ko relative to modDir, from
// modules.dep.
func findModule(modDir, name string) (string, error) {
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		file, _, _ := strings.Cut(sc.Text(), ":")
		if filepath.Base(file) == name+".ko" {
			return file, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s/modules.dep: %w", modDir, err)
	}
	return "", fmt.Errorf("module %s not in %s/modules.dep", name, modDir)
}
