package runc

import (
	"strings"
	"testing"
)

func TestRootFSType(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, want string
	}{
		{"initramfs", "1 1 0:2 / / rw - rootfs rootfs rw,size=118644k\n22 1 0:20 / /proc rw,nosuid - proc proc rw\n", "rootfs"},
		{"switch_root", "1 1 0:2 / / rw - rootfs rootfs rw\n25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n", "ext4"},
		{"optional fields", "31 1 0:27 / / rw,relatime shared:1 master:2 - overlay overlay rw,lowerdir=/a\n", "overlay"},
		{"no root", "22 1 0:20 / /proc rw - proc proc rw\n", ""},
		{"garbage", "x y z\n\n - - -\n1 1 0:2 / / rw -\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rootFSType(strings.NewReader(tc.mountinfo)); got != tc.want {
				t.Fatalf("rootFSType = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCreateArgsNoPivot(t *testing.T) {
	for _, np := range []bool{false, true} {
		r := &Runc{NoPivot: np}
		got := strings.Join(r.createArgs("c1", "/b", CreateOpts{PidFile: "/p"}), " ")
		want := "create --bundle /b --pid-file /p c1"
		if np {
			want = "create --bundle /b --no-pivot --pid-file /p c1"
		}
		if got != want {
			t.Fatalf("NoPivot=%v: %q, want %q", np, got, want)
		}
	}
}
