package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},"linux":{}`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
		typ           ContainerType
	}{
		{"single", good + `}`, "", Single},
		{"sandbox", good + `,"annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"p"}}`, "", PodSandbox},
		{"container", good + `,"annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"p"}}`, "", PodContainer},
		{"container without sandbox", good + `,"annotations":{"io.kubernetes.cri.container-type":"container"}}`, "without", 0},
		{"bad type", good + `,"annotations":{"io.kubernetes.cri.container-type":"pod"}}`, "unknown type", 0},
		{"no process", `{"root":{"path":"r"},"linux":{}}`, "process: missing", 0},
		{"no args", `{"process":{"cwd":"/"},"root":{"path":"r"},"linux":{}}`, "process.args", 0},
		{"relative cwd", `{"process":{"args":["a"],"cwd":"x"},"root":{"path":"r"},"linux":{}}`, "cwd", 0},
		{"no root", `{"process":{"args":["a"]},"linux":{}}`, "root.path", 0},
		{"no linux", `{"process":{"args":["a"]},"root":{"path":"r"}}`, "linux: missing", 0},
		{"not json", `{`, "decode", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if typ, _ := TypeOf(s); typ != tc.typ {
				t.Fatalf("type %v, want %v", typ, tc.typ)
			}
		})
	}
}

func TestLoadAndGroup(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Fatal("loaded a bundle without config.json")
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(good+`}`), 0o644)
	s, err := Load(dir)
	if err != nil || s.Process.Args[0] != "sh" {
		t.Fatalf("load: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), make([]byte, MaxSpecSize+1), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("big: %v", err)
	}
	if g := GroupID(map[string]string{SandboxIDAnnotation: "pod"}, "c"); g != "pod" {
		t.Errorf("group %q", g)
	}
	if g := GroupID(nil, "c"); g != "c" {
		t.Errorf("group %q", g)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good + `}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err == nil && (s.Process == nil || s.Root == nil || s.Linux == nil) {
			t.Fatal("accepted an incomplete spec")
		}
	})
}
