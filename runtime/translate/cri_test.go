package translate

import (
	"encoding/json"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/runtime/oci"
	"github.com/stratovirt-go/stratovirt/runtime/rootfs"
)

func TestRewriteCRIMounts(t *testing.T) {
	sb := "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/abc"
	spec := &specs.Spec{
		Process: &specs.Process{Args: []string{"sh"}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: sb + "/hosts", Options: []string{"rbind", "rw"}},
			{Destination: "/etc/hostname", Type: "bind", Source: sb + "/hostname"},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: sb + "/resolv.conf", Options: []string{"rbind", "rw"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm"},
			{Destination: "/dev/termination-log", Type: "bind", Source: "/var/lib/containerd/c/termination-log"},
			{Destination: "/data", Type: "bind", Source: "/srv/data"},
		},
	}
	files := RewriteCRIMounts(spec)
	want := CRIFiles{ResolvConf: sb + "/resolv.conf", Hosts: sb + "/hosts", Hostname: sb + "/hostname", Shm: true}
	if files != want {
		t.Errorf("files %+v, want %+v", files, want)
	}
	wantMounts := map[string]string{"/proc": "proc:proc", "/etc/resolv.conf": "bind:guest:/etc/resolv.conf",
		"/etc/hosts": "bind:file:hosts", "/etc/hostname": "bind:file:hostname",
		"/dev/shm": "bind:" + SandboxShm, "/data": "bind:/srv/data"}
	if len(spec.Mounts) != len(wantMounts) {
		t.Fatalf("mounts %+v", spec.Mounts)
	}
	for _, m := range spec.Mounts {
		if wantMounts[m.Destination] != m.Type+":"+m.Source {
			t.Errorf("mount %s = %s:%s, want %s", m.Destination, m.Type, m.Source, wantMounts[m.Destination])
		}
	}
	if o := spec.Mounts[1].Options; len(o) != 2 || o[1] != "rw" {
		t.Errorf("hosts options %v: the CRI's options are kept", o)
	}
	// The host bind (/data) is still refused; without it the guest spec
	// binds the guest's resolv.conf, the files and the pod's shm.
	if _, err := GuestSpec(spec); err == nil {
		t.Error("host bind /data accepted")
	}
	spec.Mounts = spec.Mounts[:len(spec.Mounts)-1]
	js, err := GuestSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	var g specs.Spec
	json.Unmarshal(js, &g)
	got := map[string]string{}
	for _, m := range g.Mounts {
		got[m.Destination] = m.Type + ":" + m.Source
	}
	for dst, w := range map[string]string{"/etc/resolv.conf": "bind:" + GuestResolvConf, "/etc/hosts": "bind:file:hosts",
		"/etc/hostname": "bind:file:hostname", "/dev/shm": "bind:" + SandboxShm} {
		if got[dst] != w {
			t.Errorf("guest mount %s = %q, want %q", dst, got[dst], w)
		}
	}

	PrivateShm(spec)
	for _, m := range spec.Mounts {
		if m.Destination == "/dev/shm" && (m.Type != "tmpfs" || m.Source != "shm") {
			t.Errorf("PrivateShm: %+v", m)
		}
	}
}

func TestPodNamespaces(t *testing.T) {
	ns := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace, Path: "/proc/7/ns/pid"},
		{Type: specs.IPCNamespace, Path: "/proc/7/ns/ipc"},
		{Type: specs.UTSNamespace, Path: "/proc/7/ns/uts"},
		{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"},
		{Type: specs.MountNamespace},
	}
	tests := []struct {
		name string
		ann  map[string]string
		want map[specs.LinuxNamespaceType]string // present namespaces and their paths
	}{
		{"pod container joins the pause", map[string]string{oci.ContainerTypeAnnotation: "container", oci.SandboxIDAnnotation: "pod"},
			map[specs.LinuxNamespaceType]string{specs.PIDNamespace: SandboxNamespace, specs.IPCNamespace: SandboxNamespace,
				specs.UTSNamespace: SandboxNamespace, specs.MountNamespace: ""}},
		{"standalone shares the guest's", nil, map[specs.LinuxNamespaceType]string{specs.MountNamespace: ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := &specs.Spec{Annotations: tc.ann, Linux: &specs.Linux{Namespaces: append([]specs.LinuxNamespace(nil), ns...)}}
			js, err := GuestSpec(spec)
			if err != nil {
				t.Fatal(err)
			}
			var g specs.Spec
			must(t, json.Unmarshal(js, &g))
			if len(g.Linux.Namespaces) != len(tc.want) {
				t.Fatalf("namespaces %+v", g.Linux.Namespaces)
			}
			for _, n := range g.Linux.Namespaces {
				if p, ok := tc.want[n.Type]; !ok || p != n.Path {
					t.Errorf("%s: path %q, want %q (present %v)", n.Type, n.Path, p, ok)
				}
			}
		})
	}
}

func TestMountPoints(t *testing.T) {
	spec := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
		{Destination: "/dev/shm", Type: "bind", Source: SandboxShm},
		{Destination: "/etc/hosts", Type: "bind", Source: "file:hosts"},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: GuestSource + GuestResolvConf},
		{Destination: "/data/../vol", Type: "tmpfs", Source: "tmpfs"},
		{Destination: "relative", Type: "tmpfs"},
	}}
	got := MountPoints(spec)
	want := []rootfs.MountPoint{{Path: "/proc"}, {Path: "/dev"}, {Path: "/etc/hosts", File: true},
		{Path: "/etc/resolv.conf", File: true}, {Path: "/vol"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestGuestBindOnlyAllowed(t *testing.T) {
	for _, m := range []specs.Mount{
		{Destination: "/x", Type: "bind", Source: GuestSource + "/"},
		{Destination: "/x", Type: "bind", Source: GuestSource + "/etc/passwd"},
		{Destination: "/x", Type: "ext4", Source: GuestSource + GuestResolvConf},
	} {
		if _, err := GuestSpec(&specs.Spec{Mounts: []specs.Mount{m}}); err == nil {
			t.Errorf("mount %+v accepted", m)
		}
	}
}

func TestTakeNetSysctls(t *testing.T) {
	spec := &specs.Spec{Linux: &specs.Linux{
		Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"}},
		Sysctl:     map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"},
	}}
	got := TakeNetSysctls(spec)
	if len(got) != 1 || got["net.ipv4.ip_unprivileged_port_start"] != "0" {
		t.Errorf("taken %v", got)
	}
	if len(spec.Linux.Sysctl) != 1 || spec.Linux.Sysctl["kernel.shm_rmid_forced"] != "1" {
		t.Errorf("left %v", spec.Linux.Sysctl)
	}
	// A new namespace is the guest's own as well.
	own := &specs.Spec{Linux: &specs.Linux{
		Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}},
		Sysctl:     map[string]string{"net.core.somaxconn": "1024"},
	}}
	if got := TakeNetSysctls(own); got["net.core.somaxconn"] != "1024" || len(own.Linux.Sysctl) != 0 {
		t.Errorf("new namespace: taken %v, left %v", got, own.Linux.Sysctl)
	}
	hostNet := &specs.Spec{Linux: &specs.Linux{Sysctl: map[string]string{"net.core.somaxconn": "1024"}}}
	if got := TakeNetSysctls(hostNet); got != nil || len(hostNet.Linux.Sysctl) != 1 {
		t.Errorf("host network: taken %v, left %v", got, hostNet.Linux.Sysctl)
	}
}

func TestRewriteCRIMountsOnlyPodFiles(t *testing.T) {
	spec := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: "/etc/shadow"},
		{Destination: "/etc/hostname", Type: "bind", Source: "/srv/sandboxes/hostname"},
	}}
	files := RewriteCRIMounts(spec)
	if files.Hosts != "" || files.Hostname != "" {
		t.Fatalf("host files taken for copying: %+v", files)
	}
	if spec.Mounts[0].Source != "/etc/shadow" || spec.Mounts[1].Source != "/srv/sandboxes/hostname" {
		t.Fatalf("mounts rewritten: %+v", spec.Mounts)
	}
}
