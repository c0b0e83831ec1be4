package translate

import (
	"encoding/json"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRewriteCRIMounts(t *testing.T) {
	sb := "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/abc"
	spec := &specs.Spec{
		Process: &specs.Process{Args: []string{"sh"}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: sb + "/hosts", Options: []string{"rbind"}},
			{Destination: "/etc/hostname", Type: "bind", Source: sb + "/hostname"},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: sb + "/resolv.conf", Options: []string{"rbind", "rw"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm"},
			{Destination: "/data", Type: "bind", Source: "/srv/data"},
		},
	}
	files := RewriteCRIMounts(spec)
	if files.ResolvConf != sb+"/resolv.conf" {
		t.Errorf("resolv.conf %q", files.ResolvConf)
	}
	want := map[string]string{"/proc": "proc:proc", "/etc/resolv.conf": "bind:guest:/etc/resolv.conf", "/dev/shm": "tmpfs:shm", "/data": "bind:/srv/data"}
	if len(spec.Mounts) != len(want) {
		t.Fatalf("mounts %+v", spec.Mounts)
	}
	for _, m := range spec.Mounts {
		if want[m.Destination] != m.Type+":"+m.Source {
			t.Errorf("mount %s = %s:%s, want %s", m.Destination, m.Type, m.Source, want[m.Destination])
		}
	}
	// The host bind (/data) is still refused; without it the guest spec
	// binds the guest's resolv.conf.
	if _, err := GuestSpec(spec); err == nil {
		t.Error("host bind /data accepted")
	}
	spec.Mounts = spec.Mounts[:3]
	js, err := GuestSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	var g specs.Spec
	json.Unmarshal(js, &g)
	found := false
	for _, m := range g.Mounts {
		if m.Destination == "/etc/resolv.conf" {
			found = m.Source == GuestResolvConf && m.Type == "bind"
		}
	}
	if !found {
		t.Errorf("guest spec mounts %+v", g.Mounts)
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
	own := &specs.Spec{Linux: &specs.Linux{
		Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}},
		Sysctl:     map[string]string{"net.core.somaxconn": "1024"},
	}}
	if got := TakeNetSysctls(own); got != nil || len(own.Linux.Sysctl) != 1 {
		t.Errorf("new namespace: taken %v, left %v", got, own.Linux.Sysctl)
	}
}
