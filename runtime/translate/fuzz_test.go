package translate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	"github.com/stratovirt-go/stratovirt/runtime/oci"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

// TestAnnotationAllowList: annotations outside enable_annotations, paths
// outside valid_kernel_paths / valid_initrd_paths and values out of range
// are refused with an error naming the key, never dropped or clamped.
func TestAnnotationAllowList(t *testing.T) {
	cfg := testConfig(t)
	dir := filepath.Dir(cfg.Hypervisor.Kernel)
	cfg.Hypervisor.EnableAnnotations = []string{"default_.*", "kernel", "initrd", "kernel_params"}
	cfg.Hypervisor.ValidInitrdPaths = []string{dir + "/initrd-*"}
	if err := os.WriteFile(dir+"/initrd-1", []byte("i"), 0o644); err != nil {
		t.Fatal(err)
	}
	const p = HypervisorPrefix
	for _, tc := range []struct {
		name string
		ann  map[string]string
		err  string // "" accepted
	}{
		{"regex is anchored", map[string]string{p + "kernel_paramsx": "a"}, "not allowed"},
		{"prefix of an enabled name", map[string]string{p + "kerne": dir + "/vmlinuz"}, "not allowed"},
		{"not enabled: disk_iops", map[string]string{p + "disk_iops": "10"}, "not allowed"},
		{"not enabled: iothreads", map[string]string{p + "iothreads": "2"}, "not allowed"},
		{"enabled by a pattern but unknown", map[string]string{p + "default_cpus": "2"}, "unknown hypervisor option"},
		{"other io.stratovirt namespace", map[string]string{"io.stratovirt.runtime.debug": "true"}, "unknown"},
		{"bare prefix", map[string]string{"io.stratovirt.": "x"}, "unknown"},
		{"empty option name", map[string]string{p: "x"}, "not allowed"},
		{"kernel matching the initrd glob only", map[string]string{p + "kernel": "/etc/passwd"}, "valid_kernel_paths"},
		{"kernel relative", map[string]string{p + "kernel": "vmlinuz"}, "valid_kernel_paths"},
		{"kernel not clean", map[string]string{p + "kernel": dir + "//vmlinuz"}, "valid_kernel_paths"},
		{"kernel dot-dot", map[string]string{p + "kernel": dir + "/../" + filepath.Base(dir) + "/vmlinuz"}, "valid_kernel_paths"},
		{"kernel in a subdirectory", map[string]string{p + "kernel": dir + "/sub/vmlinuz"}, "valid_kernel_paths"},
		{"initrd outside its glob", map[string]string{p + "initrd": dir + "/vmlinuz"}, "valid_initrd_paths"},
		{"initrd inside its glob", map[string]string{p + "initrd": dir + "/initrd-1"}, ""},
		{"kernel inside its glob", map[string]string{p + "kernel": cfg.Hypervisor.Kernel}, ""},
		{"kernel_params with a newline", map[string]string{p + "kernel_params": "a\ninit=/bin/sh"}, "control characters"},
		{"kernel_params with NUL", map[string]string{p + "kernel_params": "a\x00b"}, "control characters"},
		{"kernel_params too long", map[string]string{p + "kernel_params": strings.Repeat("a", 1025)}, "longer than 1024"},
		{"vcpus not a number", map[string]string{p + "default_vcpus": "2x"}, "CPU count"},
		{"vcpus too many", map[string]string{p + "default_vcpus": "255"}, "CPU count"},
		{"memory too small", map[string]string{p + "default_memory": "255"}, "size in MiB"},
		{"memory overflow", map[string]string{p + "default_memory": "18446744073709551616"}, "size in MiB"},
		{"one bad among good", map[string]string{p + "default_vcpus": "2", p + "disk_iops": "1"}, "disk_iops"},
		{"CRI annotations are not ours", map[string]string{"io.kubernetes.cri.sandbox-name": "x"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VMConfig(cfg, spec(tc.ann), "vm", nil)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
			for k := range tc.ann {
				if strings.HasPrefix(k, AnnotationPrefix) && !strings.Contains(err.Error(), k) && len(tc.ann) == 1 {
					t.Errorf("error %q does not name the key %q", err, k)
				}
			}
		})
	}
}

// fuzzConfig is the configuration FuzzVMConfig runs against: every
// option may be annotated, kernels only from one directory.
func fuzzConfig(f *testing.F) *shimconfig.Config {
	dir := f.TempDir()
	for _, n := range []string{"vmlinuz", "vmlinuz-2", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	c := shimconfig.Default()
	c.Hypervisor.Kernel, c.Hypervisor.Initrd = filepath.Join(dir, "vmlinuz"), ""
	c.Hypervisor.MaxVCPUs, c.Hypervisor.MaxMemoryMiB = 8, 4096
	c.Hypervisor.EnableAnnotations = []string{"default_vcpus", "default_memory", "kernel", "initrd", "kernel_params", "disk_iops", "iothreads"}
	c.Hypervisor.ValidKernelPaths = []string{dir + "/vmlinuz*"}
	c.Hypervisor.ValidInitrdPaths = []string{dir + "/initrd*"}
	if err := c.Validate(); err != nil {
		f.Fatal(err)
	}
	return &c
}

// FuzzVMConfig feeds OCI specs (annotations and resources from the
// bundle, i.e. from the user) through the spec → VM config translation.
// Whatever it accepts is a valid VM config within the configured limits,
// with a kernel and initrd from the configured globs and a single-line
// kernel command line; io.stratovirt. keys it accepted were all enabled.
func FuzzVMConfig(f *testing.F) {
	cfg := fuzzConfig(f)
	seeds := []string{
		`{"process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{}}`,
		`{"process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{"resources":{"cpu":{"quota":150000,"period":100000},"memory":{"limit":104857600}}}}`,
		`{"process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{},"annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"p","io.kubernetes.cri.sandbox-cpu-quota":"250000","io.kubernetes.cri.sandbox-cpu-period":"100000","io.kubernetes.cri.sandbox-memory":"1073741824"}}`,
		`{"process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{},"annotations":{"io.stratovirt.hypervisor.default_vcpus":"2","io.stratovirt.hypervisor.default_memory":"1024","io.stratovirt.hypervisor.kernel_params":"loglevel=7","io.stratovirt.hypervisor.iothreads":"3","io.stratovirt.hypervisor.disk_iops":"100"}}`,
		`{"process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{},"annotations":{"io.stratovirt.hypervisor.kernel":"/usr/share/stratovirt/../../../etc/shadow","io.stratovirt.hypervisor.default_vcpus":"3","io.stratovirt.hypervisor.initrd":"/usr/share/stratovirt/initrd.img"}}`,
		`{"process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{},"annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-cpu-quota":"-1","io.kubernetes.cri.sandbox-cpu-period":"0","io.kubernetes.cri.sandbox-memory":"9223372036854775807"}}`,
	}
	dir := filepath.Dir(cfg.Hypervisor.Kernel)
	seeds = append(seeds,
		`{"process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{},"annotations":{"io.stratovirt.hypervisor.kernel":"`+dir+`/vmlinuz-2","io.stratovirt.hypervisor.initrd":"`+dir+`/initrd.img"}}`,
		`{"process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{},"annotations":{"io.stratovirt.hypervisor.kernel":"`+dir+`/../vmlinuz","io.stratovirt.hypervisor.initrd":"`+dir+`/vmlinuz"}}`)
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s specs.Spec
		if json.Unmarshal(b, &s) != nil {
			return
		}
		drives := []Drive{{ID: "rootfs", Serial: "r", Path: cfg.Hypervisor.Kernel}}
		c, err := VMConfig(cfg, &s, "vm", drives)
		if err != nil {
			return
		}
		for k := range s.Annotations {
			if !strings.HasPrefix(k, AnnotationPrefix) {
				continue
			}
			name, ok := strings.CutPrefix(k, HypervisorPrefix)
			if !ok || !cfg.AnnotationEnabled(name) {
				t.Fatalf("accepted annotation %q", k)
			}
		}
		if c.Machine.VCPUs < 1 || c.Machine.VCPUs > cfg.Hypervisor.MaxVCPUs {
			t.Fatalf("%d vCPUs, limit %d", c.Machine.VCPUs, cfg.Hypervisor.MaxVCPUs)
		}
		if c.Machine.MemSize < vmconfig.MinMemSize || c.Machine.MemSize > cfg.Hypervisor.MaxMemoryMiB<<20 {
			t.Fatalf("memory %d MiB, limit %d", c.Machine.MemSize>>20, cfg.Hypervisor.MaxMemoryMiB)
		}
		if c.Boot.Kernel != cfg.Hypervisor.Kernel && !shimconfig.PathAllowed(c.Boot.Kernel, cfg.Hypervisor.ValidKernelPaths) {
			t.Fatalf("kernel %q outside the globs", c.Boot.Kernel)
		}
		if c.Boot.Initrd != cfg.Hypervisor.Initrd && !shimconfig.PathAllowed(c.Boot.Initrd, cfg.Hypervisor.ValidInitrdPaths) {
			t.Fatalf("initrd %q outside the globs", c.Boot.Initrd)
		}
		if strings.Contains(c.Boot.Kernel, "..") || strings.Contains(c.Boot.Initrd, "..") {
			t.Fatalf("kernel %q initrd %q", c.Boot.Kernel, c.Boot.Initrd)
		}
		if !strings.HasPrefix(c.Boot.Cmdline, BaseCmdline) || strings.ContainsAny(c.Boot.Cmdline, "\x00\n") {
			t.Fatalf("kernel command line %q", c.Boot.Cmdline)
		}
		if len(c.Drives) != 1 || c.Drives[0].File != cfg.Hypervisor.Kernel {
			t.Fatalf("drives %+v", c.Drives)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
	})
}

// FuzzGuestSpec feeds bundle specs through oci.Parse, the CRI mount
// rewrite and GuestSpec. Whatever reaches the guest has no hooks, no
// host devices, no host paths (root, cgroup, namespace paths, bind
// sources other than the guest's own), and no AppArmor profile.
func FuzzGuestSpec(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"/var/lib/c/rootfs","readonly":true},"mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/etc/resolv.conf","type":"bind","source":"/var/lib/sb/resolv.conf"},{"destination":"/dev/shm","type":"bind","source":"/run/sb/shm"}],"linux":{"cgroupsPath":"/k8s/c","namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}`))
	f.Add([]byte(`{"process":{"args":["sh"],"apparmorProfile":"x"},"root":{"path":"r"},"mounts":[{"destination":"/data","type":"bind","source":"/srv"}],"linux":{"devices":[{"path":"/dev/kvm","type":"c"}]},"hooks":{"prestart":[{"path":"/bin/x"}]}}`))
	f.Add([]byte(`{"process":{"args":["sh"]},"root":{"path":"r"},"mounts":[{"destination":"/x","type":"bind","source":"guest:/etc/shadow"},{"destination":"/y","source":"guest:/etc/resolv.conf"},{"destination":"/z","type":"","source":"file:hosts"}],"linux":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := oci.Parse(b)
		if err != nil {
			return
		}
		RewriteCRIMounts(s)
		TakeNetSysctls(s)
		out, err := GuestSpec(s)
		if err != nil {
			return
		}
		var g specs.Spec
		if err := json.Unmarshal(out, &g); err != nil {
			t.Fatalf("GuestSpec output is not JSON: %v", err)
		}
		var hooks struct {
			Hooks map[string][]json.RawMessage `json:"hooks"`
		}
		json.Unmarshal(out, &hooks)
		for kind, h := range hooks.Hooks {
			if len(h) > 0 {
				t.Fatalf("hook %s reached the guest", kind)
			}
		}
		if g.Root == nil || g.Root.Path != "rootfs" {
			t.Fatalf("root %+v", g.Root)
		}
		if g.Process != nil && g.Process.ApparmorProfile != "" {
			t.Fatal("AppArmor profile reached the guest")
		}
		if g.Linux != nil {
			if g.Linux.CgroupsPath != "" || len(g.Linux.Devices) > 0 {
				t.Fatalf("host cgroup %q or devices %v reached the guest", g.Linux.CgroupsPath, g.Linux.Devices)
			}
			for _, n := range g.Linux.Namespaces {
				// A pod container may name its sandbox's namespace by a
				// guest-side token, never a host path.
				if filepath.IsAbs(n.Path) || strings.Contains(n.Path, "/") {
					t.Fatalf("namespace path %q reached the guest", n.Path)
				}
			}
		}
		for _, m := range g.Mounts {
			if guestMountTypes[m.Type] {
				continue
			}
			// A bind reaching the guest names the guest's own resolv.conf
			// or a guest-side token ("file:hosts", the pod's shm), never
			// a host path.
			if m.Type == "bind" && (m.Source == GuestResolvConf || !strings.Contains(m.Source, "/")) {
				continue
			}
			t.Fatalf("mount %+v reached the guest", m)
		}
	})
}
