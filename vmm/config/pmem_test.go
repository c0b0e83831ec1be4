package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidatePmems(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image.erofs")
	os.WriteFile(img, []byte("erofs"), 0o644)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	for _, tc := range []struct {
		name  string
		pmems []Pmem
		err   string
	}{
		{"none", nil, ""},
		{"ok", []Pmem{{ID: "a", File: img, ReadOnly: true}, {ID: "b", File: img}}, ""},
		{"no id", []Pmem{{File: img}}, "'id' is missing"},
		{"same id", []Pmem{{ID: "a", File: img}, {ID: "a", File: img}}, `id "a" is given more than once`},
		{"long id", []Pmem{{ID: strings.Repeat("i", MaxIDLen+1), File: img}}, "out of range [1, 255]"},
		{"no file", []Pmem{{ID: "a"}}, "'file' is missing"},
		{"missing file", []Pmem{{ID: "a", File: filepath.Join(dir, "none")}}, "no such file"},
		{"directory", []Pmem{{ID: "a", File: dir}}, "is not a regular file"},
		{"empty file", []Pmem{{ID: "a", File: empty}}, "is empty"},
		{"too many", []Pmem{{ID: "a", File: img}, {ID: "b", File: img}, {ID: "c", File: img}, {ID: "d", File: img}, {ID: "e", File: img}}, "virtio-pmem number 5 out of range [0, 4]"},
	} {
		c := VMConfig{Pmems: tc.pmems}
		err := errors.Join(c.validatePmems()...)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.err)
		}
	}
	c := VMConfig{Drives: make([]Drive, MaxMMIODevices), Pmems: []Pmem{{ID: "a", File: img}}}
	if n := c.mmioDeviceCount(); n != MaxMMIODevices+1 {
		t.Errorf("a pmem is not counted as a virtio-mmio device: %d", n)
	}
}
