package cmdline

import (
	"fmt"
	"strings"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

// occurrence is one option on the command line with the values after it.
type occurrence struct {
	opt    string
	values []string
}

// applyConfigFile loads the -config JSON file, if given, into c before any
// other option is applied, so that command-line values win (see
// config.DecodeJSON for the merge rule of list options).
func applyConfigFile(c *config.VMConfig, occs []occurrence) error {
	var path string
	found := false
	for _, o := range occs {
		if o.opt != "-config" {
			continue
		}
		if found {
			return fmt.Errorf("-config: provided more than once")
		}
		found = true
		switch len(o.values) {
		case 0:
			return fmt.Errorf("-config: requires a value, but none was supplied")
		case 1:
			path = o.values[0]
		default:
			return fmt.Errorf("-config: only one value expected, got %d: %q", len(o.values), o.values)
		}
	}
	if !found {
		return nil
	}
	return config.LoadJSONFile(path, c)
}

// applyProcess handles the flag options (-daemonize, -disable-seccomp), -D
// with its optional path, and -config (already applied by
// applyConfigFile).
func applyProcess(c *config.VMConfig, opt string, k kind, values []string, seen map[string]bool) error {
	if opt == "-config" {
		return nil
	}
	if seen[opt] {
		return fmt.Errorf("%s: provided more than once", opt)
	}
	seen[opt] = true
	switch k {
	case flag:
		if len(values) > 0 {
			return fmt.Errorf("%s: takes no value, got %q", opt, values[0])
		}
	case optional:
		if len(values) > 1 {
			return fmt.Errorf("%s: at most one value expected, got %d: %q", opt, len(values), values)
		}
	}
	switch opt {
	case "-daemonize":
		c.Process.Daemonize = true
	case "-disable-seccomp":
		c.Process.DisableSeccomp = true
	case "-D":
		c.Process.Log = true
		if len(values) == 1 {
			c.Process.LogFile = values[0]
		}
	}
	return nil
}

// parseAPIChannel handles -api-channel unix:PATH. As in StratoVirt,
// anything after the first ',' is ignored; unlike it, a path may contain
// ':' (everything after "unix:" is the path).
func parseAPIChannel(c *config.VMConfig, v string) error {
	v, _, _ = strings.Cut(v, ",")
	typ, path, ok := strings.Cut(v, ":")
	if !ok {
		return fmt.Errorf("-api-channel: failed to parse '%s' (want unix:PATH)", v)
	}
	if typ != "unix" {
		return fmt.Errorf("-api-channel: %s type is not supported (supported: unix)", typ)
	}
	if path == "" {
		return fmt.Errorf("-api-channel: the socket path is empty (want unix:PATH)")
	}
	c.Process.APIChannel = path
	return nil
}
