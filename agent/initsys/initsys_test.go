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
	recs := []string{
		"6,1,100,-;Linux version 6.1\n",
		"7,2,153000,-;initcall acpi_init+0x0/0x2a0 returned 0 after 40000 usecs\n SUBSYSTEM=x\n",
		"7,3,900000,-;initcall populate_rootfs+0x0/0x40 returned 0 after 700000 usecs\n",
		"7,4,901000,-;initcall bad_init+0x0/0x10 returned -19 after 5 usecs\n",
		"garbage",
		"7,5,zz,-;initcall y+0x0/0x1 returned 0 after 1 usecs\n", // bad time
	}
	got := ParseInitcalls(recs)
	want := []Initcall{{"populate_rootfs", 700000, 900000}, {"acpi_init", 40000, 153000}, {"bad_init", 5, 901000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
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
