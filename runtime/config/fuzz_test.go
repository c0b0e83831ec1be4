package config

import (
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzPathAllowed feeds annotation-supplied paths (kernel, initrd)
// against configured globs: an accepted path is absolute, already clean
// (no "..", "//" or trailing "/"), and matches one of the globs.
func FuzzPathAllowed(f *testing.F) {
	f.Add("/usr/share/stratovirt/vmlinuz", "/usr/share/stratovirt/*")
	f.Add("/usr/share/stratovirt/../../etc/shadow", "/usr/share/stratovirt/*")
	f.Add("/usr/share/stratovirt//vmlinuz", "/usr/share/stratovirt/*")
	f.Add("/opt/k/a/b", "/opt/k/*/*")
	f.Add("relative", "*")
	f.Add("/x", "[")
	f.Fuzz(func(t *testing.T, path, glob string) {
		if !PathAllowed(path, []string{glob}) {
			return
		}
		if !filepath.IsAbs(path) || filepath.Clean(path) != path {
			t.Fatalf("PathAllowed(%q, %q) for an unclean path", path, glob)
		}
		for _, e := range strings.Split(path, "/") {
			if e == ".." {
				t.Fatalf("PathAllowed(%q, %q) with ..", path, glob)
			}
		}
		if ok, _ := filepath.Match(glob, path); !ok {
			t.Fatalf("PathAllowed(%q, %q) without a match", path, glob)
		}
	})
}

// FuzzAnnotationEnabled: enable_annotations patterns are anchored; a
// literal pattern enables exactly that name.
func FuzzAnnotationEnabled(f *testing.F) {
	f.Add("kernel", "kernel_params")
	f.Add("default_.*", "default_vcpus")
	f.Add("kernel", "kernel")
	f.Fuzz(func(t *testing.T, literal, name string) {
		// Annotation keys arrive through JSON: always valid UTF-8.
		if strings.ContainsAny(literal, `\.+*?()|[]{}^$`) || !utf8.ValidString(literal) || !utf8.ValidString(name) {
			return
		}
		c := Default()
		c.Hypervisor.EnableAnnotations = []string{literal}
		if got, want := c.AnnotationEnabled(name), literal == name; got != want {
			t.Fatalf("pattern %q enables %q: %v, want %v", literal, name, got, want)
		}
	})
}
