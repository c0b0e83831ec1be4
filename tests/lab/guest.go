package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stratovirt-go/stratovirt/tests/initramfs"
)

// GuestInitramfs writes a busybox initramfs for nested guests running the
// Debian cloud kernel: the named modules of that kernel (dependencies
// first, resolved from modules.dep) are under /modules, listed in load
// order in /modules.order, and /bin/load-modules insmods them; init
// should run it first. extra adds files (path -> content, mode 0755).
func GuestInitramfs(path, init string, modules []string, extra map[string][]byte) error {
	k, err := GuestKernel()
	if err != nil {
		return err
	}
	mods, err := moduleDeps(k.ModulesDir(), modules)
	if err != nil {
		return fmt.Errorf("guest modules: %w", err)
	}
	files := map[string][]byte{}
	for n, b := range extra {
		files[n] = b
	}
	var order []string
	for _, m := range mods {
		b, err := os.ReadFile(filepath.Join(k.ModulesDir(), m))
		if err != nil {
			return fmt.Errorf("guest module: %w", err)
		}
		name := "modules/" + filepath.Base(m)
		files[name] = b
		order = append(order, "/"+name)
	}
	files["modules.order"] = []byte(strings.Join(order, "\n") + "\n")
	files["bin/load-modules"] = []byte("#!/bin/sh\n# Loads /modules.order, dependencies first.\n" +
		"for m in $(cat /modules.order); do insmod \"$m\" || echo \"insmod $m failed\"; done\n")
	return initramfs.Busybox(path, init, files)
}
