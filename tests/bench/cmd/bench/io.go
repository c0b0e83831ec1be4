package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/bench"
	netbench "github.com/stratovirt-go/stratovirt/tests/bench/net"
	"github.com/stratovirt-go/stratovirt/tests/blk/blktest"
	"github.com/stratovirt-go/stratovirt/tests/vsock/vsocktest"
)

// ioBench names one of the I/O benchmarks: its package, test, switch.
var ioBench = map[string]struct{ pkg, test, env string }{
	"blk":   {"./tests/bench/blk", "TestBlkBench", "BLK_BENCH"},
	"net":   {"./tests/bench/net", "TestNetBench", "NET_BENCH"},
	"vsock": {"./tests/bench/vsock", "TestVsockBench", "VSOCK_BENCH"},
}

// prepareIO compiles the selected I/O benchmarks' test binaries into dir
// and prepares their files on the host, exported through the environment
// (which the lab inherits) so the binaries run their tests directly.
func prepareIO(root, dir, rows string) error {
	for _, g := range []string{"blk", "net", "vsock"} {
		if !has(rows, g) {
			continue
		}
		b := ioBench[g]
		cmd := exec.Command("go", "test", "-c", "-o", filepath.Join(dir, g+".test"), b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go test -c %s: %v\n%s", b.pkg, err, out)
		}
		fdir := filepath.Join(dir, g+"-files")
		if err := os.MkdirAll(fdir, 0o755); err != nil {
			return err
		}
		var err error
		switch g {
		case "blk":
			var f blktest.Files
			if f, err = blktest.Prepare(fdir); err == nil {
				f.SetEnv()
			}
		case "net":
			var f netbench.Files
			if f, err = netbench.Prepare(fdir); err == nil {
				f.SetEnv()
			}
		case "vsock":
			var f vsocktest.Files
			if f, err = vsocktest.Prepare(fdir); err == nil {
				f.SetEnv()
			}
		}
		if err != nil {
			return fmt.Errorf("prepare %s benchmark: %w", g, err)
		}
	}
	return nil
}

// ioRows runs one I/O benchmark's test binary and reads the rows it
// wrote (bench.EmitRows). Its finished runs are kept in resultsDir, which
// the next lab sees when this one freezes (ioRunsFile).
func ioRows(group, dir, resultsDir string) ([]bench.Row, error) {
	b := ioBench[group]
	out := filepath.Join(dir, group+"-rows.json")
	os.Remove(out)
	cmd := exec.Command(filepath.Join(dir, group+".test"), "-test.run", "^"+b.test+"$", "-test.v", "-test.count=1", "-test.timeout=40m")
	cmd.Env = append(os.Environ(), b.env+"=1", bench.EnvRowsOut+"="+out, bench.EnvRunsFile+"="+ioRunsFile(resultsDir, group))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s benchmark: %w", group, err)
	}
	fmt.Fprintf(os.Stderr, "bench: %s took %v\n", group, time.Since(t0).Round(time.Second))
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("%s benchmark wrote no rows: %w", group, err)
	}
	var rows []bench.Row
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, fmt.Errorf("%s rows: %w", group, err)
	}
	return rows, nil
}

// ioRunsFile is where an I/O group keeps its finished runs: in the
// results directory, the one a lab shares read-write with the host.
func ioRunsFile(resultsDir, group string) string {
	return filepath.Join(resultsDir, "."+group+"-runs.json")
}
