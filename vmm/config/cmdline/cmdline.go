// Package cmdline parses StratoVirt's native command line (the "LTS" dialect
// documented in openEuler's "Configuring VMs": single-dash options such as
// -kernel, -append, -smp, -m) into a config.VMConfig. It checks syntax only;
// limits are enforced by (*config.VMConfig).Validate, which the caller runs
// once all sources (command line, and later the JSON file) are applied.
// Parsing is a pure function with no shared state.
package cmdline

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

// Action says what the caller should do after a successful parse.
type Action int

const (
	// Run means boot the VM described by the config.
	Run Action = iota
	// ShowHelp means print Usage() and exit 0 (-h, -help, --help).
	ShowHelp
	// ShowVersion means print Version(...) and exit 0 (-V, -version, --version).
	ShowVersion
)

type kind int

const (
	single      kind = iota // exactly one value, at most once
	multi                   // one or more values; repeats accumulate
	repeated                // exactly one value per occurrence, any number of occurrences
	flag                    // no value, at most once (process.go)
	optional                // zero or one value, at most once (process.go)
	unsupported             // a StratoVirt option this build does not implement yet
)

// options is the allow-list. Every StratoVirt LTS option is known so that it
// ends an -append value and gets a precise error if not implemented yet.
var options = map[string]kind{
	"-name":            single,
	"-machine":         single,
	"-kernel":          single,
	"-append":          multi,
	"-initrd":          single,
	"-smp":             single,
	"-m":               single,
	"-serial":          single,
	"-drive":           repeated,
	"-netdev":          repeated,
	"-chardev":         repeated,
	"-device":          single,
	"-api-channel":     single,
	"-config":          single,
	"-D":               optional,
	"-pidfile":         single,
	"-disable-seccomp": flag,
	"-daemonize":       flag,
	"-iothread":        repeated,
	"-balloon":         single,
	"-mem-path":        single,
	"-rng":             single,
	"-S":               unsupported,
	"-freeze":          unsupported,
}

var (
	helpFlags    = map[string]bool{"-h": true, "-help": true, "--help": true}
	versionFlags = map[string]bool{"-V": true, "-version": true, "--version": true}
)

// Parse parses args (without the program name) on top of config.Default().
func Parse(args []string) (config.VMConfig, Action, error) {
	c := config.Default()
	act, err := Apply(&c, args)
	return c, act, err
}

// Apply parses args and overrides the settings they name in c, leaving the
// rest of c untouched (so a config loaded from elsewhere can be overridden
// by the command line, as StratoVirt does). -h or -V anywhere wins over
// everything else, with help first. On error c may be partly updated.
//
// Grammar (StratoVirt's argument parser): an argument starting with '-' is
// an option and must be known; the arguments after it that do not start with
// '-' are its values. So -append console=ttyS0 root=/dev/vda rw takes three
// values, which are joined with single spaces; a value is never split at
// '=' or anywhere else. A kernel parameter that starts with '-' therefore
// cannot follow -append as a separate argument (quote the whole command
// line into one argument instead).
func Apply(c *config.VMConfig, args []string) (Action, error) {
	for _, a := range args {
		if helpFlags[a] {
			return ShowHelp, nil
		}
	}
	for _, a := range args {
		if versionFlags[a] {
			return ShowVersion, nil
		}
	}

	var occs []occurrence
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			if _, ok := options[a]; !ok {
				return Run, fmt.Errorf("%s: unknown option (use -h or -help for usage)", a)
			}
			occs = append(occs, occurrence{opt: a})
			continue
		}
		if len(occs) == 0 {
			return Run, fmt.Errorf("unexpected argument %q before any option (use -h or -help for usage)", a)
		}
		last := &occs[len(occs)-1]
		last.values = append(last.values, a)
	}

	if err := applyConfigFile(c, occs); err != nil { // the file first: options override it
		return Run, err
	}
	seen := make(map[string]bool)
	var appendVals []string
	appendSet := false
	for _, o := range occs {
		k := options[o.opt]
		if k == unsupported {
			return Run, fmt.Errorf("%s: option not supported yet", o.opt)
		}
		if k == flag || k == optional || o.opt == "-config" {
			if err := applyProcess(c, o.opt, k, o.values, seen); err != nil {
				return Run, err
			}
			continue
		}
		if len(o.values) == 0 {
			return Run, fmt.Errorf("%s: requires a value, but none was supplied", o.opt)
		}
		if k == multi {
			appendSet = true
			appendVals = append(appendVals, o.values...)
			continue
		}
		if k == repeated {
			if len(o.values) > 1 {
				return Run, fmt.Errorf("%s: only one value expected, got %d: %q", o.opt, len(o.values), o.values)
			}
			if err := applyRepeated(c, o.opt, o.values[0]); err != nil {
				return Run, err
			}
			continue
		}
		if o.opt == "-device" && len(o.values) == 1 && isPmemDevice(o.values[0]) {
			// Unlike vsock, a repeatable device.
			if err := parsePmem(c, o.values[0]); err != nil {
				return Run, err
			}
			continue
		}
		if seen[o.opt] {
			return Run, fmt.Errorf("%s: provided more than once", o.opt)
		}
		seen[o.opt] = true
		if len(o.values) > 1 {
			return Run, fmt.Errorf("%s: only one value expected, got %d: %q", o.opt, len(o.values), o.values)
		}
		if err := apply(c, o.opt, o.values[0]); err != nil {
			return Run, err
		}
	}
	if appendSet {
		c.Boot.Cmdline = strings.Join(appendVals, " ")
	}
	return Run, nil
}

// apply sets the field for one single-valued option.
func apply(c *config.VMConfig, opt, v string) error {
	switch opt {
	case "-name":
		c.Name = v
	case "-kernel":
		c.Boot.Kernel = v
	case "-initrd":
		c.Boot.Initrd = v
	case "-serial":
		if v != "stdio" {
			return fmt.Errorf("-serial: invalid parameter '%s' (supported: stdio)", v)
		}
		c.Serial.Stdio = true
	case "-smp":
		return parseSMP(c, v)
	case "-m":
		return parseMem(c, v)
	case "-machine":
		return parseMachine(c, v)
	case "-api-channel":
		return parseAPIChannel(c, v)
	case "-pidfile":
		c.Process.PidFile = v
	case "-mem-path":
		c.Machine.MemPath = v
	case "-rng":
		return parseRNG(c, v)
	case "-device":
		return parseDevice(c, v)
	case "-balloon":
		return parseBalloon(c, v)
	}
	return nil
}

// parseSMP handles -smp [cpus=]N.
func parseSMP(c *config.VMConfig, v string) error {
	kv, err := parseSubOptions("-smp", v, "cpus", "cpus")
	if err != nil {
		return err
	}
	s, ok := kv["cpus"]
	if !ok {
		return errors.New("-smp: the CPU count is missing ([cpus=]N)")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) || (err == nil && n > math.MaxInt32) {
		return config.VCPUsRangeError(s)
	}
	if err != nil {
		return fmt.Errorf("-smp: unable to parse '%s' for 'cpus'", s)
	}
	c.Machine.VCPUs = int(n)
	return nil
}

// parseMem handles -m [size=]N[M|m|G|g]. Following the seed document's table
// ("-m  Memory size (in bytes), memory size (in MB), and memory size (in
// GB)") and its JSON example ("mem_size": 268435456), and StratoVirt LTS's
// parser: a bare number is bytes, a trailing M/m means MiB and G/g GiB.
// Alignment and range are checked by Validate.
func parseMem(c *config.VMConfig, v string) error {
	kv, err := parseSubOptions("-m", v, "size", "size")
	if err != nil {
		return err
	}
	s, ok := kv["size"]
	if !ok {
		return errors.New("-m: the memory size is missing ([size=]N[M|G])")
	}
	size, err := ParseMemSize(s)
	if err != nil {
		return fmt.Errorf("-m: %w", err)
	}
	c.Machine.MemSize = size
	return nil
}

// ParseMemSize converts StratoVirt's memory size syntax to bytes: digits,
// optionally followed by one unit letter, M or m (MiB) or G or g (GiB); no
// letter means bytes. The JSON mem_size string form uses the same syntax.
func ParseMemSize(s string) (uint64, error) {
	num, mult := s, uint64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'M', 'm':
			num, mult = s[:n-1], 1<<20
		case 'G', 'g':
			num, mult = s[:n-1], 1<<30
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if errors.Is(err, strconv.ErrRange) || (err == nil && n > math.MaxUint64/mult) {
		return 0, fmt.Errorf("integer overflow occurred while parsing '%s'", s)
	}
	if err != nil {
		return 0, fmt.Errorf("unable to parse '%s' as a memory size (N bytes, NM or NG)", s)
	}
	return n * mult, nil
}

// parseMachine handles -machine [type=]microvm[,dump-guest-core=on|off]
// [,mem-share=on|off]. The type is kept as written; Validate checks it.
func parseMachine(c *config.VMConfig, v string) error {
	kv, err := parseSubOptions("-machine", v, "type", "type", "dump-guest-core", "mem-share")
	if err != nil {
		return err
	}
	if t, ok := kv["type"]; ok {
		if config.IsMicroVM(t) {
			t = config.MachineTypeMicroVM
		}
		c.Machine.Type = t
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{{"dump-guest-core", &c.Machine.DumpGuestCore}, {"mem-share", &c.Machine.MemShare}} {
		key, dst := f.key, f.dst
		s, ok := kv[key]
		if !ok {
			continue
		}
		b, err := parseBool(s)
		if err != nil {
			return fmt.Errorf("-machine: unable to parse '%s' for '%s' (on|off)", s, key)
		}
		*dst = b
	}
	return nil
}

// parseBool accepts StratoVirt's boolean spellings.
func parseBool(s string) (bool, error) {
	switch s {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q", s)
}

// parseSubOptions splits "k=v,k=v" as StratoVirt's CmdParser does. The first
// item may omit "key=" and then sets positional. Empty items (a leading,
// trailing or doubled ','), items starting or ending with '=', unknown keys
// and repeated keys are errors naming opt.
func parseSubOptions(opt, s, positional string, keys ...string) (map[string]string, error) {
	allowed := make(map[string]bool, len(keys))
	for _, k := range keys {
		allowed[k] = true
	}
	out := make(map[string]string)
	for i, item := range strings.Split(s, ",") {
		if item == "" || strings.HasPrefix(item, "=") || strings.HasSuffix(item, "=") {
			return nil, fmt.Errorf("%s: invalid parameter '%s'", opt, item)
		}
		key, val, hasEq := strings.Cut(item, "=")
		if !hasEq {
			if i != 0 || positional == "" {
				return nil, fmt.Errorf("%s: invalid parameter '%s'", opt, item)
			}
			key, val = positional, item
		}
		if !allowed[key] {
			return nil, fmt.Errorf("%s: invalid parameter '%s'", opt, key)
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%s: parameter '%s' is given more than once", opt, key)
		}
		out[key] = val
	}
	return out, nil
}

// Version is the -V text.
func Version(version string) string {
	return "StratoVirt " + version
}

// Usage is the -h text.
func Usage() string {
	return `StratoVirt: a lightweight virtual machine monitor

USAGE:
  stratovirt [OPTIONS]

OPTIONS:
  -name <vm_name>          VM name, 1 to 255 characters (default StratoVirt)
  -machine [type=]microvm[,dump-guest-core=on|off][,mem-share=on|off]
                           machine type (only MicroVm) and memory options
  -kernel <path>           kernel image (bzImage, or vmlinux.bin made with objcopy -O binary)
  -append <cmdline>...     kernel command line; all following arguments up to
                           the next option are joined with spaces
  -initrd <path>           initrd image
  -smp [cpus=]<n>          number of vCPUs, 1 to 254 (default 1)
  -m [size=]<n>[M|G]       memory size: bytes, or MiB with M, GiB with G;
                           256M to 512G, a multiple of 1 MiB (default 256M)
  -serial stdio            add a 16550 UART (ttyS0) on standard input/output
  -drive id=<id>,file=<path>[,readonly=on|off][,direct=on|off][,serial=<s>]
         [,iothread=<iothread_id>][,iops=<n>]
                           add a virtio-blk disk (repeatable, at most 6; the
                           first is /dev/vda); direct defaults to on, iops 0
                           (unlimited) to 1000000, serial up to 20 characters
  -iothread id=<id>        add an I/O thread named <id> (repeatable, at most 8)
  -netdev id=<id>,netdev=<tap>[,mac=<xx:xx:xx:xx:xx:xx>][,iothread=<id>][,fds=<fd>]
                           add a virtio-net NIC on host tap <tap> (attached, or
                           created) or on the inherited tap descriptor <fd>
                           (repeatable, at most 2); without mac= a random
                           locally administered address
  -chardev id=<id>,path=<socket>
                           add a virtio-console (guest /dev/hvc0) on a unix
                           socket created at <socket> (must not exist); one
                           client at a time
  -rng random_file=<path>|getrandom[,bytes_per_sec=<n>]
                           add a virtio-rng entropy device fed from <path> or
                           the host's getrandom; rate 64 to 1000000000 bytes/s
  -device vsock,id=<id>,guest-cid=<n>[,backend=vhost|unix][,uds-path=<path>]
                           add the vsock device (one); guest CID 3 to
                           4294967294; backend vhost uses /dev/vhost-vsock
                           (host connects with AF_VSOCK), unix listens on
                           <path> (host writes "CONNECT <port>\n"; guest
                           connections to the host's port P go to <path>_P);
                           default: vhost if /dev/vhost-vsock opens, else unix
  -device virtio-pmem,id=<id>,file=<path>[,readonly=on|off]
                           add a virtio-pmem device (guest /dev/pmemN; at most
                           4) mapping <path> into guest memory above RAM;
                           readonly=on keeps the guest's writes off the file
  -balloon deflate-on-oom=true|false[,free-page-reporting=true|false]
                           add a memory balloon (not with hugetlbfs -mem-path);
                           free-page-reporting: the guest hands its free
                           memory back to the host as it frees it
  -mem-path <path>         back guest RAM with a file: a hugetlbfs mount or
                           other directory (a new unlinked file is made there)
                           or a file; absolute path; with hugetlbfs the memory
                           size must be a multiple of the huge page size
  -config <file>           read the VM configuration from a JSON file; options
                           given on the command line override it
  -api-channel unix:<path> QMP control socket; the file must not exist
  -D [<logfile>]           write the log to <logfile> (default stderr); level
                           from STRATOVIRT_LOG_LEVEL (default info with -D)
  -daemonize               run in the background, detached from the terminal
  -pidfile <path>          write the pid here (with -daemonize only; must not
                           exist); removed at exit
  -disable-seccomp         do not install the seccomp system call filters
  -h, -help                print this help
  -V, -version             print the version
`
}
