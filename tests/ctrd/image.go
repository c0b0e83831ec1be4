package ctrd

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// OCIImage writes an OCI image layout tarball holding one layer: busybox
// (static) with its applets as symlinks under /bin, and /etc, /tmp, /proc,
// /sys, /dev, /root. ref is the image name annotation ctr imports it as.
func OCIImage(path, ref string) error {
	return ociImage(path, ref, map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"sh"}})
}

// PauseOCIImage writes OCIImage's image with an entrypoint that stands in
// for registry.k8s.io/pause: it sleeps until SIGTERM or SIGINT, as PID 1
// (which ignores signals it has no handler for).
func PauseOCIImage(path, ref string) error {
	return ociImage(path, ref, map[string]any{"Env": []string{"PATH=/bin"}, "Entrypoint": PauseEntrypoint})
}

// PauseEntrypoint is the stand-in pause image's entrypoint (busybox sh
// and sleep).
var PauseEntrypoint = []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"}

// BigImage is OCIImage's busybox with a second layer that holds
// /data/blob, BigImageMiB of incompressible bytes: an image whose size,
// not its program, sets what preparing a container's root costs.
const (
	BigImage    = "docker.io/library/e2e-big:1"
	BigImageMiB = 64
)

// BigOCIImage writes BigImage's layout tarball (see OCIImage).
func BigOCIImage(path, ref string) error {
	var layer bytes.Buffer
	lt := tar.NewWriter(&layer)
	mt := time.Unix(0, 0)
	lt.WriteHeader(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	lt.WriteHeader(&tar.Header{Name: "data/blob", Typeflag: tar.TypeReg, Mode: 0o644, Size: BigImageMiB << 20, ModTime: mt})
	// xorshift64: incompressible and the same in every run.
	x := uint64(0x9e3779b97f4a7c15)
	buf := make([]byte, 1<<20)
	for range BigImageMiB {
		for i := 0; i < len(buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(buf[i:], x)
		}
		lt.Write(buf)
	}
	if err := lt.Close(); err != nil {
		return err
	}
	return ociImage(path, ref, map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"sh"}}, layer.Bytes())
}

// ociImage writes the busybox image with imgConfig as its config's
// "config" (Env, Cmd, Entrypoint), and the extra layers on top.
func ociImage(path, ref string, imgConfig map[string]any, extra ...[]byte) error {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox-static: %w", err)
	}
	var layer bytes.Buffer
	lt := tar.NewWriter(&layer)
	mt := time.Unix(0, 0)
	for _, d := range []string{"bin/", "etc/", "tmp/", "proc/", "sys/", "dev/", "root/", "run/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		lt.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: mode, ModTime: mt})
	}
	lt.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb)), ModTime: mt})
	lt.Write(bb)
	for _, a := range []string{"sh", "echo", "cat", "sleep", "true", "false", "ls", "ps", "id", "stty", "head", "wc", "dd", "kill", "hostname", "mount", "tr", "seq", "yes"} {
		lt.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: mt})
	}
	for name, body := range map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n"} {
		lt.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mt})
		lt.Write([]byte(body))
	}
	lt.Close()

	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	blobs := map[string][]byte{}
	add := func(b []byte) string {
		s := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(s[:])
		blobs["blobs/sha256/"+hex.EncodeToString(s[:])] = b
		return d
	}
	var diffIDs []string
	var layers []desc
	for _, l := range append([][]byte{layer.Bytes()}, extra...) {
		d := add(l)
		diffIDs = append(diffIDs, d)
		layers = append(layers, desc{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: d, Size: len(l)})
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": imgConfig,
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	cfgDigest := add(cfg)
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cfgDigest, Size: len(cfg)},
		"layers": layers,
	})
	manDigest := add(man)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []desc{{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: manDigest, Size: len(man),
			Annotations: map[string]string{"io.containerd.image.name": ref}}},
	})

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := tar.NewWriter(f)
	put := func(name string, b []byte) {
		w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: mt})
		w.Write(b)
	}
	put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put("index.json", index)
	for n, b := range blobs {
		put(n, b)
	}
	return w.Close()
}
