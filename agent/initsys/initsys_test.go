package initsys

import (
	"reflect"
	"testing"
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
