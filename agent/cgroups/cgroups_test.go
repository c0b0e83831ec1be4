package cgroups

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseFlatKeyed(t *testing.T) {
	m := ParseFlatKeyed([]byte("usage_usec 123\nuser_usec 100\nbad line x\n\nsystem_usec 23\n"))
	if m["usage_usec"] != 123 || m["user_usec"] != 100 || m["system_usec"] != 23 || len(m) != 3 {
		t.Fatalf("got %v", m)
	}
}

func TestParseSingle(t *testing.T) {
	for in, want := range map[string]uint64{"max\n": 0, "4096\n": 4096, "0": 0} {
		if got, err := ParseSingle([]byte(in)); err != nil || got != want {
			t.Errorf("ParseSingle(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := ParseSingle([]byte("-1")); err == nil {
		t.Error("accepted -1")
	}
}

func TestParseIOStat(t *testing.T) {
	e := ParseIOStat([]byte("254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\njunk\n7:1 rbytes=x\n"))
	if len(e) != 2 || e[0].Major != 254 || e[0].ReadBytes != 4096 || e[0].WriteBytes != 8192 || e[0].ReadIos != 1 || e[0].WriteIos != 2 || e[1].Minor != 1 {
		t.Fatalf("got %v", e)
	}
}

func TestParseNetDev(t *testing.T) {
	in := `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0: 2000  20 1 2 0 0 0 0 3000 30 3 4 0 0 0 0
`
	n := ParseNetDev([]byte(in))
	if len(n) != 1 || n[0].Name != "eth0" || n[0].RxBytes != 2000 || n[0].RxPackets != 20 || n[0].RxErrors != 1 || n[0].RxDropped != 2 ||
		n[0].TxBytes != 3000 || n[0].TxPackets != 30 || n[0].TxErrors != 3 || n[0].TxDropped != 4 {
		t.Fatalf("got %v", n)
	}
}

func TestStatsFromFiles(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"cgroup.procs":   "1\n2\n",
		"cpu.stat":       "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_throttled 1\n",
		"memory.current": "1048576\n",
		"memory.max":     "max\n",
		"memory.stat":    "anon 4096\nfile 8192\n",
		"memory.events":  "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n",
		"pids.current":   "2\n",
		"pids.max":       "100\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Stats(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Cpu.UsageUsec != 10 || s.Cpu.NrThrottled != 1 || s.Memory.UsageBytes != 1<<20 || s.Memory.LimitBytes != 0 ||
		s.Memory.AnonBytes != 4096 || s.Memory.OomKills != 1 || s.Memory.OomEvents != 2 || s.Pids.Current != 2 || s.Pids.Limit != 100 {
		t.Fatalf("got %v", s)
	}
	pids, err := Pids(dir)
	if err != nil || len(pids) != 2 || pids[0] != 1 {
		t.Fatalf("pids %v %v", pids, err)
	}
	if k, err := OOMKills(dir); err != nil || k != 1 {
		t.Fatalf("OOMKills = %d, %v", k, err)
	}
	if _, err := Stats(filepath.Join(dir, "none"), 0); err == nil {
		t.Fatal("Stats of a missing cgroup succeeded")
	}
}

func FuzzParsers(f *testing.F) {
	f.Add([]byte("254:0 rbytes=1 wbytes=2\n"))
	f.Add([]byte("eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseFlatKeyed(b)
		ParseSingle(b)
		for _, e := range ParseIOStat(b) {
			if e == nil {
				t.Fatal("nil entry")
			}
		}
		for _, n := range ParseNetDev(b) {
			if n.Name == "" || n.Name == "lo" {
				t.Fatalf("bad entry %v", n)
			}
		}
	})
}
