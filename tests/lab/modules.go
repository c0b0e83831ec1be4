package lab

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// moduleDeps reads modules.dep of an unpacked kernel and returns the
// module files (relative to the modules directory) needed to load each of
// names, dependencies first, each once. A module the kernel has built in
// (modules.builtin) needs no file.
func moduleDeps(modDir string, names []string) ([]string, error) {
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[moduleName(l)] = true
		}
	}
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("read module dependencies: %w", err)
	}
	defer f.Close()
	deps := map[string][]string{} // file -> dependency files
	byName := map[string]string{} // module name -> file
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[file] = strings.Fields(rest)
		byName[moduleName(file)] = file
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read module dependencies: %w", err)
	}
	var order []string
	seen := map[string]bool{}
	var visit func(file string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		for _, d := range deps[file] {
			visit(d)
		}
		order = append(order, file)
	}
	for _, n := range names {
		file, ok := byName[strings.ReplaceAll(n, "-", "_")]
		if !ok && builtin[strings.ReplaceAll(n, "-", "_")] {
			continue
		}
		if !ok {
			return nil, fmt.Errorf("module %s not found in %s (built in or missing)", n, modDir)
		}
		visit(file)
	}
	return order, nil
}

// moduleName turns "kernel/fs/9p/9p.ko" (or .ko.xz) into "9p", with
// dashes folded to underscores as the kernel does.
func moduleName(file string) string {
	base := filepath.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}
