package cri

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
)

// imageSpec is a one-layer image: static busybox with the listed
// applets under /bin, and the configured entrypoint and command.
type imageSpec struct {
	applets    []string
	files      map[string]string
	entrypoint []string
	cmd        []string
}

// pauseSpec stands in for registry.k8s.io/pause: it sleeps until
// SIGTERM or SIGINT, as PID 1 (which ignores signals without handlers).
func pauseSpec() imageSpec {
	return imageSpec{
		applets:    []string{"sh", "sleep"},
		entrypoint: ctrd.PauseEntrypoint,
	}
}

// busyboxSpec is a busybox image with an HTTP server, client and the
// usual tools; /www/index.html says hello.
func busyboxSpec() imageSpec {
	return imageSpec{
		applets: []string{"sh", "echo", "cat", "sleep", "true", "false", "ls", "ps", "id", "head", "wc", "dd",
			"kill", "hostname", "mount", "tr", "seq", "yes", "httpd", "wget", "nc", "ping", "ip", "ifconfig",
			"nslookup", "grep", "env", "date", "touch", "mkdir", "rm", "test", "[", "nproc", "free", "top", "uname"},
		files: map[string]string{"www/index.html": "hello from stratovirt\n", "bin/pgrep": pgrepScript},
		cmd:   []string{"sh"},
	}
}

// pgrepScript is pgrep PATTERN (the PIDs of processes whose name
// matches), which critest's exec checks use and Debian's busybox-static
// lacks as an applet.
const pgrepScript = `#!/bin/sh
st=1
for d in /proc/[0-9]*; do
	read -r name 2>/dev/null <"$d/comm" || continue
	if echo "$name" | grep -qE -- "$1"; then echo "${d#/proc/}"; st=0; fi
done
exit $st
`

// builtImage is an image's blobs: one layer, the config, the manifest.
type builtImage struct {
	layer, config, manifest []byte
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

type desc struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

const manifestType = "application/vnd.oci.image.manifest.v1+json"

// buildImage builds the image's blobs.
func buildImage(spec imageSpec) (*builtImage, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox-static: %w", err)
	}
	var layer bytes.Buffer
	lt := tar.NewWriter(&layer)
	mt := time.Unix(0, 0)
	for _, d := range []string{"bin/", "etc/", "tmp/", "proc/", "sys/", "dev/", "root/", "run/", "www/", "var/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		lt.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: mode, ModTime: mt})
	}
	lt.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb)), ModTime: mt})
	lt.Write(bb)
	for _, a := range spec.applets {
		lt.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: mt})
	}
	files := map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
		"etc/group": "root:x:0:\nnobody:x:65534:\n"}
	for k, v := range spec.files {
		files[k] = v
	}
	for name, body := range files {
		mode := int64(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		lt.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body)), ModTime: mt})
		lt.Write([]byte(body))
	}
	lt.Close()
	img := &builtImage{layer: layer.Bytes()}
	cc := map[string]any{"Env": []string{"PATH=/bin"}}
	if spec.entrypoint != nil {
		cc["Entrypoint"] = spec.entrypoint
	}
	if spec.cmd != nil {
		cc["Cmd"] = spec.cmd
	}
	img.config, _ = json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "config": cc,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(img.layer)}},
	})
	img.manifest, _ = json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifestType,
		"config": desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(img.config), Size: len(img.config)},
		"layers": []desc{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: digest(img.layer), Size: len(img.layer)}},
	})
	return img, nil
}

// ociImage writes an OCI image layout tarball that ctr imports as ref.
func ociImage(path, ref string, spec imageSpec) error {
	img, err := buildImage(spec)
	if err != nil {
		return err
	}
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []desc{{MediaType: manifestType, Digest: digest(img.manifest), Size: len(img.manifest),
			Annotations: map[string]string{"io.containerd.image.name": ref}}},
	})
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := tar.NewWriter(f)
	put := func(name string, b []byte) {
		w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)})
		w.Write(b)
	}
	put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put("index.json", index)
	for _, b := range [][]byte{img.layer, img.config, img.manifest} {
		put("blobs/sha256/"+strings.TrimPrefix(digest(b), "sha256:"), b)
	}
	return w.Close()
}

// pushImage uploads the image to the registry at addr (host:port, plain
// HTTP) as repo:tag through the registry v2 API (monolithic uploads).
func pushImage(addr, repo, tag string, img *builtImage) error {
	base := "http://" + addr + "/v2/" + repo
	for _, b := range [][]byte{img.layer, img.config} {
		resp, err := http.Post(base+"/blobs/uploads/", "application/octet-stream", nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusAccepted || loc == "" {
			return fmt.Errorf("start upload to %s: %s", repo, resp.Status)
		}
		u, err := url.Parse(loc)
		if err != nil {
			return err
		}
		if !u.IsAbs() {
			u, _ = url.Parse("http://" + addr + loc)
		}
		q := u.Query()
		q.Set("digest", digest(b))
		u.RawQuery = q.Encode()
		req, _ := http.NewRequest(http.MethodPut, u.String(), bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("upload blob to %s: %s", repo, resp.Status)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, base+"/manifests/"+tag, bytes.NewReader(img.manifest))
	req.Header.Set("Content-Type", manifestType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("put manifest %s:%s: %s", repo, tag, resp.Status)
	}
	return nil
}
