package ctrd

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestCRIConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cri     CRI
		want    []string
		wantNot []string
		net     string
		bridge  string
		subnet  string
	}{
		{
			name: "defaults",
			want: []string{
				"version = 3\n",
				`root = "/d/root"`, `state = "/d/state"`, `address = "/d/c.sock"`, `address = "/d/c.sock.ttrpc"`,
				`sandbox = "registry.k8s.io/pause:3.10"`,
				`bin_dirs = ["/r/.cache/cni/bin"]`, `conf_dir = "/d/net.d"`,
				"default_runtime_name = 'runc'",
				"runtimes.stratovirt]\n      runtime_type = 'io.containerd.stratovirt.v2'\n" +
					"      runtime_path = \"/s/containerd-shim-stratovirt-v2\"\n      sandboxer = 'podsandbox'\n",
				"runtimes.stratovirt.options]\n        ConfigPath = \"/d/configuration.toml\"\n",
			},
			wantNot: []string{"config_path", "pod_annotations", "container_annotations"},
			net:     "svbench", bridge: "svbench0", subnet: "10.88.9.0/24",
		},
		{
			name: "registry and annotations",
			cri: CRI{CNIBinDir: "/cni", Network: "n", Bridge: "b0", Subnet: "10.1.2.0/24", SandboxImage: "p:1",
				RegistryConfigPath: "/d/certs.d", Annotations: []string{"io.a.*", "io.b"}},
			want: []string{
				`sandbox = "p:1"`, `bin_dirs = ["/cni"]`,
				"  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = \"/d/certs.d\"\n[plugins.'io.containerd.cri.v1.runtime']\n",
				"sandboxer = 'podsandbox'\n      pod_annotations = ['io.a.*', 'io.b']\n      container_annotations = ['io.a.*', 'io.b']\n      [plugins.",
			},
			net: "n", bridge: "b0", subnet: "10.1.2.0/24",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cri.withDefaults("/r/.cache/bin")
			conf := c.Config("/d", "/s")
			for _, w := range tc.want {
				if !strings.Contains(conf, w) {
					t.Errorf("config lacks %q:\n%s", w, conf)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(conf, w) {
					t.Errorf("config has %q:\n%s", w, conf)
				}
			}
			var cni struct {
				Name    string `json:"name"`
				Plugins []struct {
					Type   string `json:"type"`
					Bridge string `json:"bridge"`
					IPAM   struct {
						Type   string `json:"type"`
						Ranges [][]struct {
							Subnet string `json:"subnet"`
						} `json:"ranges"`
					} `json:"ipam"`
				} `json:"plugins"`
			}
			if err := json.Unmarshal([]byte(c.CNIConfig()), &cni); err != nil {
				t.Fatalf("CNI config: %v\n%s", err, c.CNIConfig())
			}
			if cni.Name != tc.net || len(cni.Plugins) != 2 || cni.Plugins[0].Type != "bridge" || cni.Plugins[1].Type != "portmap" ||
				cni.Plugins[0].Bridge != tc.bridge || cni.Plugins[0].IPAM.Type != "host-local" ||
				len(cni.Plugins[0].IPAM.Ranges) != 1 || len(cni.Plugins[0].IPAM.Ranges[0]) != 1 ||
				cni.Plugins[0].IPAM.Ranges[0][0].Subnet != tc.subnet {
				t.Errorf("CNI config %+v", cni)
			}
		})
	}
}

func TestEnableAnnotations(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"default_vcpus"}, "enable_annotations = [\"default_vcpus\"]\n"},
		{[]string{"default_vcpus", "default_memory"}, "enable_annotations = [\"default_vcpus\", \"default_memory\"]\n"},
	} {
		if got := enableAnnotations(tc.in); got != tc.want {
			t.Errorf("enableAnnotations(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// imageConfig reads the image config's "config" from an OCI layout
// tarball written by OCIImage or PauseOCIImage.
func imageConfig(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no image config in %s: %v", path, err)
		}
		if !strings.HasPrefix(h.Name, "blobs/") {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			OS     string              `json:"os"`
			Config map[string][]string `json:"config"`
		}
		if json.Unmarshal(b, &c) == nil && c.OS == "linux" {
			return c.Config
		}
	}
}

func TestImages(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs busybox-static")
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		write func(path, ref string) error
		want  map[string][]string
	}{
		{OCIImage, map[string][]string{"Env": {"PATH=/bin"}, "Cmd": {"sh"}}},
		{BigOCIImage, map[string][]string{"Env": {"PATH=/bin"}, "Cmd": {"sh"}}},
		{PauseOCIImage, map[string][]string{"Env": {"PATH=/bin"},
			"Entrypoint": {"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"}}},
	} {
		p := filepath.Join(dir, "img.tar")
		if err := tc.write(p, "example.com/x:1"); err != nil {
			t.Fatal(err)
		}
		if got := imageConfig(t, p); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("image config %v, want %v", got, tc.want)
		}
	}
}

// TestBigImageLayers checks BigOCIImage's layout: every blob is named by
// its digest, and the manifest lists busybox's layer and the data layer,
// which holds /data/blob of BigImageMiB.
func TestBigImageLayers(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs busybox-static")
	}
	p := filepath.Join(t.TempDir(), "big.tar")
	if err := BigOCIImage(p, BigImage); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok {
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != d {
				t.Fatalf("blob %s holds another digest", d)
			}
			blobs[d] = b
		}
	}
	var layers []struct{ Digest string }
	for _, b := range blobs {
		var m struct {
			Layers []struct{ Digest string }
		}
		if json.Unmarshal(b, &m) == nil && len(m.Layers) > 0 {
			layers = m.Layers
		}
	}
	if len(layers) != 2 {
		t.Fatalf("manifest layers %v, want busybox's and the data layer", layers)
	}
	lt := tar.NewReader(bytes.NewReader(blobs[strings.TrimPrefix(layers[1].Digest, "sha256:")]))
	for {
		h, err := lt.Next()
		if err != nil {
			t.Fatalf("no data/blob in the data layer: %v", err)
		}
		if h.Name == "data/blob" {
			if h.Size != BigImageMiB<<20 {
				t.Fatalf("data/blob is %d bytes, want %d", h.Size, BigImageMiB<<20)
			}
			return
		}
	}
}
