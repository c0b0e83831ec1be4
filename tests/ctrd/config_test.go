package ctrd

import "testing"

func TestSetTOMLString(t *testing.T) {
	const conf = "[hypervisor]\nkernel = \"/k\"\nkernel_params = \"-- -x\"\n[runtime]\nlog_level = \"info\"\nrootfs_cache_dir = \"/c\"\n"
	for _, c := range []struct {
		name, section, key, value, want string
		err                             bool
	}{
		{name: "replace in the first section", section: "hypervisor", key: "kernel_params", value: "-- -prefault=false",
			want: "[hypervisor]\nkernel = \"/k\"\nkernel_params = \"-- -prefault=false\"\n[runtime]\nlog_level = \"info\"\nrootfs_cache_dir = \"/c\"\n"},
		{name: "add to the first section", section: "hypervisor", key: "initrd", value: "/i",
			want: "[hypervisor]\nkernel = \"/k\"\nkernel_params = \"-- -x\"\ninitrd = \"/i\"\n[runtime]\nlog_level = \"info\"\nrootfs_cache_dir = \"/c\"\n"},
		{name: "replace in the last section", section: "runtime", key: "rootfs_cache_dir", value: "",
			want: "[hypervisor]\nkernel = \"/k\"\nkernel_params = \"-- -x\"\n[runtime]\nlog_level = \"info\"\nrootfs_cache_dir = \"\"\n"},
		{name: "add to the last section", section: "runtime", key: "work_dir", value: "/w",
			want: "[hypervisor]\nkernel = \"/k\"\nkernel_params = \"-- -x\"\n[runtime]\nlog_level = \"info\"\nrootfs_cache_dir = \"/c\"\nwork_dir = \"/w\"\n"},
		{name: "a key of another section is not touched", section: "runtime", key: "kernel", value: "/other",
			want: "[hypervisor]\nkernel = \"/k\"\nkernel_params = \"-- -x\"\n[runtime]\nlog_level = \"info\"\nrootfs_cache_dir = \"/c\"\nkernel = \"/other\"\n"},
		{name: "quotes", section: "hypervisor", key: "kernel_params", value: `a "b"`,
			want: "[hypervisor]\nkernel = \"/k\"\nkernel_params = \"a \\\"b\\\"\"\n[runtime]\nlog_level = \"info\"\nrootfs_cache_dir = \"/c\"\n"},
		{name: "no such section", section: "agent", key: "x", value: "y", err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := setTOMLString(conf, c.section, c.key, c.value)
			if c.err {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}
