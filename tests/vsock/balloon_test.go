package vsock

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/vsock/vsocktest"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

// qmpClient is a minimal QMP client: one command at a time, events
// skipped.
type qmpClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialQMP(t *testing.T, path string) *qmpClient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	q := &qmpClient{c: c, r: bufio.NewReader(c)}
	q.r.ReadString('\n') // greeting
	q.cmd(t, `{"execute":"qmp_capabilities"}`)
	return q
}

func (q *qmpClient) cmd(t *testing.T, s string) map[string]any {
	t.Helper()
	q.c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(q.c, s)
	for {
		line, err := q.r.ReadString('\n')
		if err != nil {
			t.Fatalf("qmp %s: %v", s, err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("qmp reply %q: %v", line, err)
		}
		if _, ev := m["event"]; !ev {
			return m
		}
	}
}

func (q *qmpClient) actual(t *testing.T) uint64 {
	t.Helper()
	r := q.cmd(t, `{"execute":"query-balloon"}`)
	ret, ok := r["return"].(map[string]any)
	if !ok {
		t.Fatalf("query-balloon: %v", r)
	}
	return uint64(ret["actual"].(float64))
}

// rss returns the VMM's resident set size from smaps_rollup.
func rss(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Rss:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no Rss in smaps_rollup")
	return 0
}

func TestBalloon(t *testing.T) {
	dir := t.TempDir()
	uds, qmpSock := filepath.Join(dir, "v.sock"), filepath.Join(dir, "qmp.sock")
	const ram = 1024 << 20
	v := vsocktest.Start(t, bin.StratoVirtArgs("1024M", "-balloon", "deflate-on-oom=true", "-api-channel", "unix:"+qmpSock,
		"-device", "vsock,id=vsock0,guest-cid=3,backend=unix,uds-path="+uds))
	target := vsockdial.Target{UDSPath: uds}
	q := dialQMP(t, qmpSock)
	if a := q.actual(t); a != ram {
		t.Fatalf("query-balloon before inflating: %d, want %d", a, ram)
	}
	// Make the guest touch most of its RAM so the host backs it.
	if r := vsocktest.Control(t, target, "fill 750", 120*time.Second); !strings.HasPrefix(r, "OK") {
		t.Fatalf("fill: %s", r)
	}
	pid := v.Cmd.Process.Pid
	before := rss(t, pid)

	// Inflate by 256 MiB.
	const want = ram - 256<<20
	if r := q.cmd(t, fmt.Sprintf(`{"execute":"balloon","arguments":{"value":%d}}`, want)); r["return"] == nil {
		t.Fatalf("balloon: %v", r)
	}
	deadline := time.Now().Add(120 * time.Second)
	var actual uint64
	for actual = q.actual(t); actual > want && time.Now().Before(deadline); actual = q.actual(t) {
		time.Sleep(200 * time.Millisecond)
	}
	if actual != want {
		t.Fatalf("balloon did not reach %d MiB: actual %d MiB", want>>20, actual>>20)
	}
	after := rss(t, pid)
	t.Logf("VMM RSS %d MiB before, %d MiB after inflating 256 MiB", before>>20, after>>20)
	if before < after || before-after < 200<<20 {
		t.Errorf("inflating 256 MiB lowered the VMM's RSS by only %d MiB", (int64(before)-int64(after))>>20)
	}

	// Deflate on OOM: the guest allocates more than it has outside the
	// balloon and gets pages back instead of an OOM kill.
	if r := vsocktest.Control(t, target, "alloc 800", 180*time.Second); !strings.HasPrefix(r, "OK") {
		t.Fatalf("alloc beyond the balloon: %s", r)
	}
	got := q.actual(t)
	t.Logf("after the guest allocated 800 MiB: actual %d MiB", got>>20)
	if got <= want+64<<20 {
		t.Errorf("deflate-on-oom: actual %d MiB, want well above %d MiB", got>>20, want>>20)
	}
}

// TestFreePageReporting: memory the guest frees goes back to the host
// without any balloon target, through the reporting queue.
func TestFreePageReporting(t *testing.T) {
	dir := t.TempDir()
	uds := filepath.Join(dir, "v.sock")
	v := vsocktest.Start(t, bin.StratoVirtArgs("1024M", "-balloon", "free-page-reporting=true",
		"-device", "vsock,id=vsock0,guest-cid=3,backend=unix,uds-path="+uds))
	target := vsockdial.Target{UDSPath: uds}
	pid := v.Cmd.Process.Pid
	if r := vsocktest.Control(t, target, "alloc 512", 120*time.Second); !strings.HasPrefix(r, "OK") {
		t.Fatalf("alloc: %s", r)
	}
	held := rss(t, pid)
	if r := vsocktest.Control(t, target, "free", 60*time.Second); !strings.HasPrefix(r, "OK") {
		t.Fatalf("free: %s", r)
	}
	// Linux reports free 2 MiB blocks about 2 s after they pile up.
	var now uint64
	start := time.Now()
	for deadline := start.Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if now = rss(t, pid); now+384<<20 <= held {
			break
		}
	}
	t.Logf("VMM RSS %d MiB with 512 MiB held in the guest, %d MiB %v after it was freed", held>>20, now>>20, time.Since(start).Round(100*time.Millisecond))
	if now+384<<20 > held {
		t.Errorf("the guest freed 512 MiB and the VMM's RSS fell by only %d MiB", (int64(held)-int64(now))>>20)
	}
}
