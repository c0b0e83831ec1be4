// Package vsock benchmarks vsock throughput between the host and the
// guest: our device with the vhost backend and with the userspace unix
// backend against QEMU microvm's vhost-vsock-device, inside one lab run
// (or on the host when its KVM boots Linux). The guest runs the static
// peer of tests/vsock; the workloads are a 32 MiB echo started by the
// host, the same started by the guest, and 32 parallel 1 MiB echoes. It
// prints a Markdown ratio table.
//
// It runs only when VSOCK_BENCH=1 (it takes a few minutes):
//
//	VSOCK_BENCH=1 go test ./tests/bench/vsock/ -v -count=1 -timeout 30m
package vsock

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdvsock "github.com/mdlayher/vsock"

	"github.com/stratovirt-go/stratovirt/tests/bench"
	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/tests/vsock/vsocktest"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

var bin vsocktest.Files

func TestMain(m *testing.M) {
	if os.Getenv("VSOCK_BENCH") == "" {
		fmt.Println("vsock benchmark: set VSOCK_BENCH=1 to run it")
		os.Exit(0)
	}
	if f, ok := vsocktest.FromEnv(); ok {
		bin = f
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vsock-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := vsocktest.Prepare(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vsock bench:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	f.SetEnv()
	bin = f
	code := lab.Exec(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	large = 32 << 20
	conns = 32
	each  = 1 << 20
)

// result is MiB/s per workload.
type result map[string]float64

var workloads = []struct{ key, label string }{
	{"h2g", "host-initiated echo, 32 MiB"},
	{"g2h", "guest-initiated echo, 32 MiB"},
	{"par", "32 parallel host-initiated echoes of 1 MiB"},
}

func measure(t *testing.T, name string, args []string, target vsockdial.Target) result {
	t.Helper()
	v := vsocktest.Start(t, args)
	defer v.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := result{}
	// Warm up (and wait for the guest to answer).
	if err := vsocktest.EchoTransfer(ctx, target, 0, 1<<20); err != nil {
		t.Fatalf("%s: warm-up: %v", name, err)
	}
	start := time.Now()
	if err := vsocktest.EchoTransfer(ctx, target, 1, large); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	r["h2g"] = large / (1 << 20) / time.Since(start).Seconds()
	start = time.Now()
	if rep := vsocktest.Control(t, target, fmt.Sprintf("connect %d 1 %d", vsocktest.HostPort, large), 5*time.Minute); !strings.HasPrefix(rep, "OK") {
		t.Fatalf("%s: guest-initiated: %s", name, rep)
	}
	r["g2h"] = large / (1 << 20) / time.Since(start).Seconds()
	start = time.Now()
	errs := make(chan error, conns)
	for i := range conns {
		go func() { errs <- vsocktest.EchoTransfer(ctx, target, i+2, each) }()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	r["par"] = conns * each / (1 << 20) / time.Since(start).Seconds()
	t.Logf("%s: %.1f / %.1f / %.1f MiB/s", name, r["h2g"], r["g2h"], r["par"])
	return r
}

func TestVsockBench(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
		t.Skip("no /dev/vhost-vsock")
	}
	// Guest-initiated connections arrive here: AF_VSOCK for vhost
	// (ours and QEMU's), a unix socket for our userspace backend.
	vl, err := mdvsock.Listen(vsocktest.HostPort, nil)
	if err != nil {
		t.Skipf("host AF_VSOCK listen: %v", err)
	}
	defer vl.Close()
	go vsocktest.EchoServer(vl)
	uds := filepath.Join(t.TempDir(), "v.sock")
	ul, err := net.Listen("unix", fmt.Sprintf("%s_%d", uds, vsocktest.HostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go vsocktest.EchoServer(ul)

	ours := measureSaved(t, "stratovirt vhost", bin.StratoVirtArgs("512M", "-device", "vsock,id=v,guest-cid=11,backend=vhost"),
		vsockdial.Target{CID: 11})
	qemu := measureSaved(t, "qemu vhost-vsock-device", []string{"qemu-system-x86_64", "-M", "microvm", "-accel", "kvm", "-cpu", "host",
		"-m", "512M", "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", bin.Kernel, "-initrd", bin.Initrd, "-append", vsocktest.Cmdline,
		"-device", "vhost-vsock-device,guest-cid=12"}, vsockdial.Target{CID: 12})
	user := measureSaved(t, "stratovirt unix", bin.StratoVirtArgs("512M", "-device", "vsock,id=v,guest-cid=13,backend=unix,uds-path="+uds),
		vsockdial.Target{UDSPath: uds})

	where, _ := lab.Where()
	var b strings.Builder
	fmt.Fprintf(&b, "\nvsock throughput, stratovirt-go vs QEMU %s microvm vhost-vsock-device (guest: Debian cloud kernel, 2 vCPUs, 512 MiB; measured on: %s)\n\n", qemuVersion(), where)
	b.WriteString("| workload | ours vhost MiB/s | ours unix MiB/s | QEMU vhost MiB/s | vhost ratio | unix ratio |\n|---|---:|---:|---:|---:|---:|\n")
	var rows []bench.Row
	for _, w := range workloads {
		q := qemu[w.key]
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f | %.2f | %.2f |\n", w.label, ours[w.key], user[w.key], q, ours[w.key]/q, user[w.key]/q)
		for _, side := range []struct {
			name string
			r    map[string]float64
		}{{"vhost", ours}, {"unix backend", user}} {
			r := bench.NewRow("vsock "+w.label+", ours "+side.name, "MiB/s", []float64{side.r[w.key]}, "qemu vhost-vsock-device", []float64{q})
			r.HigherIsBetter = true
			rows = append(rows, r)
		}
	}
	if err := bench.EmitRows(rows); err != nil {
		t.Error(err)
	}
	fmt.Println(b.String())
	t.Log(b.String())
}

// measureSaved is measure, or the result an earlier lab saved of it
// (bench.SaveRuns): after a lab freeze the benchmark goes on in a fresh
// lab without measuring again what it has.
func measureSaved(t *testing.T, name string, args []string, target vsockdial.Target) result {
	var m result
	if ok, err := bench.LoadRuns("vsock "+name, &m); err != nil {
		t.Fatal(err)
	} else if ok {
		t.Logf("%s: measured by an earlier lab", name)
		return m
	}
	m = measure(t, name, args, target)
	if err := bench.SaveRuns("vsock "+name, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func qemuVersion() string {
	out, err := exec.Command("qemu-system-x86_64", "--version").Output()
	if err != nil {
		return "?"
	}
	if f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0]); len(f) >= 4 {
		return f[3]
	}
	return "?"
}
