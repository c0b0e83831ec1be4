package config

import (
	"path/filepath"
	"runtime"
	"testing"
)

// The shipped configs/configuration.toml parses and equals the defaults
// where it repeats them.
func TestShippedConfiguration(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	c, err := Load(filepath.Join(filepath.Dir(file), "../../configs/configuration.toml"))
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Hypervisor.Kernel != d.Hypervisor.Kernel || c.Hypervisor.DefaultMemoryMiB != d.Hypervisor.DefaultMemoryMiB ||
		c.Runtime.RootfsFormat != d.Runtime.RootfsFormat || c.Runtime.WorkDir != d.Runtime.WorkDir ||
		c.Runtime.RootfsCacheDir != d.Runtime.RootfsCacheDir {
		t.Fatalf("shipped config differs from defaults: %+v", c)
	}
}
