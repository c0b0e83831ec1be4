package translate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

func testConfig(t *testing.T) *shimconfig.Config {
	dir := t.TempDir()
	k := filepath.Join(dir, "vmlinuz")
	os.WriteFile(k, []byte("k"), 0o644)
	r := filepath.Join(dir, "runc.erofs")
	os.WriteFile(r, []byte("r"), 0o644)
	root := filepath.Join(dir, "root.erofs")
	os.WriteFile(root, []byte("root"), 0o644)
	c := shimconfig.Default()
	c.Hypervisor.Kernel, c.Hypervisor.Initrd, c.Hypervisor.RuncImage, c.Hypervisor.Image = k, "", r, root
	c.Hypervisor.MaxVCPUs, c.Hypervisor.MaxMemoryMiB = 8, 4096
	c.Hypervisor.EnableAnnotations = []string{"default_vcpus", "default_memory", "kernel", "kernel_params", "disk_iops", "free_page_reporting", "mem_merge"}
	c.Hypervisor.ValidKernelPaths = []string{dir + "/*"}
	return &c
}

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func spec(ann map[string]string) *specs.Spec {
	return &specs.Spec{Process: &specs.Process{Args: []string{"sh"}}, Root: &specs.Root{Path: "rootfs"}, Linux: &specs.Linux{}, Annotations: ann}
}

func TestVMConfigSizing(t *testing.T) {
	cfg := testConfig(t)
	single := spec(nil)
	single.Linux.Resources = &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Quota: i64(150000), Period: u64(100000)},
		Memory: &specs.LinuxMemory{Limit: i64(100<<20 + 1)},
	}
	for _, tc := range []struct {
		name  string
		s     *specs.Spec
		vcpus int
		mem   uint64
		err   string
	}{
		{"defaults", spec(nil), 1, 512, ""},
		{"single with limits", single, 3, 512 + 101, ""},
		{"sandbox annotations", spec(map[string]string{
			"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-cpu-quota": "250000",
			"io.kubernetes.cri.sandbox-cpu-period": "100000", "io.kubernetes.cri.sandbox-memory": "1073741824"}), 4, 512 + 1024, ""},
		{"capped", spec(map[string]string{
			"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-cpu-quota": "10000000",
			"io.kubernetes.cri.sandbox-cpu-period": "100000", "io.kubernetes.cri.sandbox-memory": "107374182400"}), 8, 4096, ""},
		{"override", spec(map[string]string{"io.stratovirt.hypervisor.default_vcpus": "2", "io.stratovirt.hypervisor.default_memory": "1024"}), 2, 1024, ""},
		{"bad sandbox memory", spec(map[string]string{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-memory": "lots"}), 0, 0, "sandbox-memory"},
		{"not enabled", spec(map[string]string{"io.stratovirt.hypervisor.initrd": "/x"}), 0, 0, "not allowed"},
		{"unknown prefix", spec(map[string]string{"io.stratovirt.runtime.x": "1"}), 0, 0, "unknown"},
		{"bad vcpus", spec(map[string]string{"io.stratovirt.hypervisor.default_vcpus": "0"}), 0, 0, "CPU count"},
		{"kernel outside globs", spec(map[string]string{"io.stratovirt.hypervisor.kernel": "/etc/passwd"}), 0, 0, "valid_kernel_paths"},
		{"kernel traversal", spec(map[string]string{"io.stratovirt.hypervisor.kernel": filepath.Dir(cfg.Hypervisor.Kernel) + "/../x"}), 0, 0, "valid_kernel_paths"},
		{"iops", spec(map[string]string{"io.stratovirt.hypervisor.disk_iops": "-1"}), 0, 0, "IOPS"},
		{"free page reporting not a bool", spec(map[string]string{"io.stratovirt.hypervisor.free_page_reporting": "maybe"}), 0, 0, "not true or false"},
		{"mem merge not a bool", spec(map[string]string{"io.stratovirt.hypervisor.mem_merge": "yes please"}), 0, 0, "not true or false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := VMConfig(cfg, tc.s, "vm", []Drive{{ID: "rootfs", Serial: "r", Path: cfg.Hypervisor.Kernel}})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Machine.VCPUs != tc.vcpus || c.Machine.MemSize != tc.mem<<20 {
				t.Fatalf("vcpus %d mem %d MiB, want %d %d", c.Machine.VCPUs, c.Machine.MemSize>>20, tc.vcpus, tc.mem)
			}
			if len(c.Drives) != 1 || c.Drives[0].Serial != "r" || c.Drives[0].IOThread != "iothread0" || !c.Serial.Stdio {
				t.Fatalf("drives %+v", c.Drives)
			}
			if want := []vmconfig.Pmem{{ID: RootPmemID, File: cfg.Hypervisor.Image, ReadOnly: true}}; !reflect.DeepEqual(c.Pmems, want) {
				t.Fatalf("pmems %+v, want %+v", c.Pmems, want)
			}
		})
	}
	s := spec(map[string]string{"io.stratovirt.hypervisor.kernel_params": "loglevel=7", "io.stratovirt.hypervisor.disk_iops": "100"})
	c, err := VMConfig(cfg, s, "vm", []Drive{{ID: "d", Path: cfg.Hypervisor.Kernel}})
	if err != nil || !strings.HasSuffix(c.Boot.Cmdline, " loglevel=7") || c.Drives[0].IOPS != 100 {
		t.Fatalf("%v %q %+v", err, c.Boot.Cmdline, c.Drives)
	}
	// A copy-on-write root keeps its backing image and stays buffered.
	if c, err := VMConfig(cfg, spec(nil), "vm", []Drive{{ID: "d", Path: cfg.Hypervisor.Kernel, Backing: cfg.Hypervisor.Kernel}}); err != nil ||
		c.Drives[0].Backing != cfg.Hypervisor.Kernel || c.Drives[0].Direct {
		t.Fatalf("backed drive: %v %+v", err, c.Drives)
	}
	// The root image: root= before kernel_params (which may end with
	// "-- agent flags"), no initrd.
	if c.Boot.Initrd != "" || !strings.Contains(c.Boot.Cmdline, BaseCmdline+" "+RootCmdline+" loglevel=7") {
		t.Fatalf("root image boot: initrd %q, cmdline %q", c.Boot.Initrd, c.Boot.Cmdline)
	}
	// An initrd boots that initramfs with the runc image, without root=.
	cfg.Hypervisor.Initrd = cfg.Hypervisor.Kernel
	c, err = VMConfig(cfg, spec(nil), "vm", nil)
	if err != nil || c.Boot.Initrd != cfg.Hypervisor.Kernel || strings.Contains(c.Boot.Cmdline, "root=") ||
		!reflect.DeepEqual(c.Pmems, []vmconfig.Pmem{{ID: RuncPmemID, File: cfg.Hypervisor.RuncImage, ReadOnly: true}}) {
		t.Fatalf("initrd boot: %v %+v", err, c)
	}
	// An initramfs that carries runc itself needs no runc image.
	cfg.Hypervisor.RuncImage = ""
	if c, err := VMConfig(cfg, spec(nil), "vm", nil); err != nil || len(c.Pmems) != 0 {
		t.Fatalf("without runc_image: %v %+v", err, c)
	}
	// No balloon by default; free page reporting is a balloon that only
	// reports.
	if c, err := VMConfig(cfg, spec(nil), "vm", nil); err != nil || c.Balloon != nil {
		t.Fatalf("default: %v %+v", err, c.Balloon)
	}
	cfg.Hypervisor.FreePageReporting = true
	if c, err := VMConfig(cfg, spec(nil), "vm", nil); err != nil || c.Balloon == nil || !c.Balloon.FreePageReporting || c.Balloon.DeflateOnOOM {
		t.Fatalf("free page reporting: %v %+v", err, c.Balloon)
	}
	// A pod turns it on or off with its annotation.
	off := spec(map[string]string{"io.stratovirt.hypervisor.free_page_reporting": "false"})
	if c, err := VMConfig(cfg, off, "vm", nil); err != nil || c.Balloon != nil {
		t.Fatalf("annotation false: %v %+v", err, c.Balloon)
	}
	cfg.Hypervisor.FreePageReporting = false
	on := spec(map[string]string{"io.stratovirt.hypervisor.free_page_reporting": "true"})
	if c, err := VMConfig(cfg, on, "vm", nil); err != nil || c.Balloon == nil || !c.Balloon.FreePageReporting {
		t.Fatalf("annotation true: %v %+v", err, c.Balloon)
	}
	// Guest RAM is offered to KSM only when asked, by the configuration
	// or by a pod's annotation; the annotation also turns it off.
	if c, err := VMConfig(cfg, spec(nil), "vm", nil); err != nil || c.Machine.MemMerge {
		t.Fatalf("mem merge by default: %v %+v", err, c.Machine)
	}
	if c, err := VMConfig(cfg, spec(map[string]string{"io.stratovirt.hypervisor.mem_merge": "true"}), "vm", nil); err != nil || !c.Machine.MemMerge {
		t.Fatalf("mem merge annotation: %v %+v", err, c.Machine)
	}
	cfg.Hypervisor.MemMerge = true
	if c, err := VMConfig(cfg, spec(nil), "vm", nil); err != nil || !c.Machine.MemMerge {
		t.Fatalf("mem_merge = true: %v %+v", err, c.Machine)
	}
	if c, err := VMConfig(cfg, spec(map[string]string{"io.stratovirt.hypervisor.mem_merge": "false"}), "vm", nil); err != nil || c.Machine.MemMerge {
		t.Fatalf("mem merge annotation false: %v %+v", err, c.Machine)
	}
	cfg.Hypervisor.MemMerge = false
	cfg.Hypervisor.RuncImage = filepath.Join(t.TempDir(), "missing.erofs")
	if _, err := VMConfig(cfg, spec(nil), "vm", nil); err == nil || !strings.Contains(err.Error(), "missing.erofs") {
		t.Fatalf("missing runc_image: %v", err)
	}
}

func TestGuestSpec(t *testing.T) {
	s := spec(nil)
	s.Root.Readonly = true
	s.Linux.CgroupsPath = "/k8s/pod/c"
	s.Linux.Namespaces = []specs.LinuxNamespace{{Type: "pid"}, {Type: "network", Path: "/var/run/netns/cni-1"}}
	s.Mounts = []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}, {Destination: "/dev", Type: "tmpfs", Source: "tmpfs"}}
	s.Process.ApparmorProfile = "cri-containerd.apparmor.d"
	b, err := GuestSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	var g specs.Spec
	json.Unmarshal(b, &g)
	if g.Linux.CgroupsPath != "" || len(g.Linux.Namespaces) != 1 || g.Linux.Namespaces[0].Type != "pid" || len(g.Mounts) != 2 ||
		g.Root.Path != "rootfs" || !g.Root.Readonly || g.Process.ApparmorProfile != "" {
		t.Fatalf("guest spec %s", b)
	}
	if s.Linux.CgroupsPath != "/k8s/pod/c" || len(s.Linux.Namespaces) != 2 {
		t.Fatal("GuestSpec changed its input")
	}
	// A new network namespace (ctr run without --net-host) is the VM's
	// own: the guest adds none.
	single := spec(nil)
	single.Linux.Namespaces = []specs.LinuxNamespace{{Type: "mount"}, {Type: "network"}, {Type: "uts"}}
	b, err = GuestSpec(single)
	if err != nil {
		t.Fatal(err)
	}
	g = specs.Spec{}
	json.Unmarshal(b, &g)
	if len(g.Linux.Namespaces) != 2 || g.Linux.Namespaces[0].Type != "mount" || g.Linux.Namespaces[1].Type != "uts" {
		t.Fatalf("namespaces of a new-netns container: %+v", g.Linux.Namespaces)
	}
	bad := spec(nil)
	bad.Mounts = []specs.Mount{{Destination: "/data", Type: "bind", Source: "/srv/data"}}
	bad.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/bin/hook"}}}
	bad.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/fuse"}}
	_, err = GuestSpec(bad)
	if err == nil || !strings.Contains(err.Error(), "/data") || !strings.Contains(err.Error(), "hooks") || !strings.Contains(err.Error(), "devices") {
		t.Fatalf("error %v", err)
	}
	// Each hook kind alone is refused, the deprecated prestart included
	// (set through JSON: the Go field is deprecated).
	for _, kind := range []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"} {
		var h specs.Spec
		if err := json.Unmarshal([]byte(`{"ociVersion":"1.0.2","root":{"path":"rootfs"},"hooks":{"`+kind+`":[{"path":"/bin/x"}]}}`), &h); err != nil {
			t.Fatal(err)
		}
		if _, err := GuestSpec(&h); err == nil || !strings.Contains(err.Error(), "hooks") {
			t.Errorf("%s hook: error %v", kind, err)
		}
	}
	if _, err := GuestSpec(&specs.Spec{Root: &specs.Root{Path: "rootfs"}, Hooks: &specs.Hooks{}}); err != nil {
		t.Errorf("empty hooks: %v", err)
	}
}

func TestCreateContainerAndStdio(t *testing.T) {
	st := StdioOf("/in", "/out", "/err", true)
	if !st.Stdin || !st.Stdout || st.Stderr {
		t.Fatalf("stdio %+v", st)
	}
	if st := StdioOf("", "/out", "/err", false); st.Stdin || !st.Stdout || !st.Stderr {
		t.Fatalf("stdio %+v", st)
	}
	r, err := CreateContainer("c1", spec(nil), "ser", "ext4", true, st)
	if err != nil || r.Rootfs.Serial != "ser" || r.Rootfs.Fstype != "ext4" || len(r.Rootfs.Options) != 1 || r.ContainerId != "c1" {
		t.Fatalf("%+v %v", r, err)
	}
}
