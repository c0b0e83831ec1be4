package initsys

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestModuleList(t *testing.T) {
	got := ModuleList([]byte("# modules\n/lib/modules/v/virtio.ko\n\n  /lib/modules/v/virtio_blk.ko  \n/lib/modules/v/vsock.ko opt=1 b=2\n"))
	want := [][2]string{{"/lib/modules/v/virtio.ko", ""}, {"/lib/modules/v/virtio_blk.ko", ""}, {"/lib/modules/v/vsock.ko", "opt=1 b=2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q", got)
	}
}

func TestLoadModulesMissingList(t *testing.T) {
	if err := LoadModules("/nonexistent/list"); err != nil {
		t.Fatal(err)
	}
}

func TestParseInitcalls(t *testing.T) {
	recs := ParseKernelLog([]string{
		"6,1,100,-;Linux version 6.1\n",
		"7,2,153000,-;initcall acpi_init+0x0/0x2a0 returned 0 after 40000 usecs\n SUBSYSTEM=x\n",
		"7,3,900000,-;initcall populate_rootfs+0x0/0x40 returned 0 after 700000 usecs\n",
		"7,4,901000,-;initcall bad_init+0x0/0x10 returned -19 after 5 usecs\n",
		"garbage",
		"7,5,zz,-;initcall y+0x0/0x1 returned 0 after 1 usecs\n", // bad time
	})
	if len(recs) != 4 {
		t.Fatalf("parsed %d records, want 4: %+v", len(recs), recs)
	}
	got := ParseInitcalls(recs)
	want := []Initcall{{"populate_rootfs", 700000, 900000}, {"acpi_init", 40000, 153000}, {"bad_init", 5, 901000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestBootProfile(t *testing.T) {
	recs := ParseKernelLog([]string{
		"5,0,0,-;Linux version 6.1\n",
		"6,1,0,-;Command line: quiet\n",
		"6,2,250000,-;Memory: 200000K/262144K available\n",
		"6,3,260000,-;clocksource: Switched to kvm-clock\n",
		"7,4,300000,-;initcall x+0x0/0x1 returned 0 after 30000 usecs\n",
		"6,5,700000,-;Run /init as init process with a rather long text that goes on\n",
	})
	if got := LogGaps(recs, 2); !reflect.DeepEqual(got, []LogGap{
		{400000, "Run /init as init process with a rather long text that goes on", 700000},
		{250000, "Memory: 200000K/262144K available", 250000},
	}) {
		t.Errorf("LogGaps = %+v", got)
	}
	if got := len(LogGaps(recs, 10)); got != 4 {
		t.Errorf("LogGaps(10) has %d gaps, want 4 (none of length 0)", got)
	}
	want := `6 kernel log records, the last at 700 ms, init run at 700 ms; longest gaps: 400 ms before "Run /init as init process with a rather long text that goes …" (at 700 ms); ` +
		`250 ms before "Memory: 200000K/262144K available" (at 250 ms); 1 initcalls took 30 ms; slowest: x 30 ms (done at 300 ms)`
	if got := bootProfile(recs, 2); got != want {
		t.Errorf("bootProfile =\n%s\nwant\n%s", got, want)
	}
	if got := bootProfile(nil, 2); got != "" {
		t.Errorf("bootProfile of nothing = %q", got)
	}
}

func TestHasVirtioDevice(t *testing.T) {
	dir := t.TempDir()
	for name, id := range map[string]string{"virtio0": "0x0013\n", "virtio1": "0x001b\n", "virtio2": "garbage\n"} {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		os.WriteFile(filepath.Join(dir, name, "device"), []byte(id), 0o644)
	}
	if !HasVirtioDevice(dir, virtioIDPmem) || !HasVirtioDevice(dir, 19) {
		t.Error("a listed device is not found")
	}
	if HasVirtioDevice(dir, 2) || HasVirtioDevice(filepath.Join(dir, "none"), virtioIDPmem) {
		t.Error("an absent device is found")
	}
	// Without a virtio-pmem device there is nothing to mount or wait for.
	os.RemoveAll(filepath.Join(dir, "virtio1"))
	if ok, waited, err := MountUsr(dir, filepath.Join(dir, "pmem0"), time.Second); ok || err != nil || waited != 0 {
		t.Errorf("MountUsr without a pmem device = %v, %v, %v", ok, waited, err)
	}
	// With one whose block device never comes, it gives up after the wait.
	os.MkdirAll(filepath.Join(dir, "virtio1"), 0o755)
	os.WriteFile(filepath.Join(dir, "virtio1", "device"), []byte("0x001b\n"), 0o644)
	if ok, waited, err := MountUsr(dir, filepath.Join(dir, "pmem0"), 20*time.Millisecond); ok || err == nil || waited < 20*time.Millisecond {
		t.Errorf("MountUsr with a missing device = %v, %v, %v", ok, waited, err)
	}
}
