// Package config owns the shim's TOML configuration
// (configs/configuration.toml, installed as /etc/stratovirt/configuration.toml):
// the guest kernel and initrd, VM size defaults and limits, the vsock
// backend, iothreads and disk QoS, the log level, and which
// io.stratovirt. annotations may override what. It only reads files; the
// Config value is filled once and then read-only.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// DefaultPath is where the configuration is installed.
const DefaultPath = "/etc/stratovirt/configuration.toml"

// EnvPath names an environment variable that overrides DefaultPath (but
// not the runtime options' ConfigPath).
const EnvPath = "STRATOVIRT_CONF_FILE"

// MaxFileSize bounds the configuration file.
const MaxFileSize = 1 << 20

// Vsock backends.
const (
	VsockVhost     = "vhost"
	VsockUserspace = "userspace"
)

// Network backends: NetAuto uses the kernel's vhost-net when
// /dev/vhost-net opens and the VMM's own backend otherwise.
const (
	NetAuto      = "auto"
	NetVhost     = "vhost"
	NetUserspace = "userspace"
)

// Rootfs image formats for snapshotters that hand over a directory.
const (
	FormatAuto  = "auto"
	FormatExt4  = "ext4"
	FormatErofs = "erofs"
)

// Config is the whole file.
type Config struct {
	Hypervisor Hypervisor `toml:"hypervisor"`
	Runtime    Runtime    `toml:"runtime"`
}

// Hypervisor is the [hypervisor] table: what the microVM looks like.
type Hypervisor struct {
	Kernel string `toml:"kernel"`
	Initrd string `toml:"initrd"`
	// RuncImage is the read-only image of runc and its libraries that the
	// guest mounts on /usr (the guest image's runc.erofs), attached as
	// virtio-pmem; "" attaches none, for an initramfs that carries runc
	// itself.
	RuncImage string `toml:"runc_image"`
	// Image is the guest's root filesystem (the guest image's root.erofs:
	// the agent, runc and its libraries), attached read-only as the VM's
	// first virtio-pmem device and mounted as / with DAX, so the VM boots
	// without an initramfs. It is used when Initrd is "" (an initrd, from
	// this file or an annotation, boots that initramfs with RuncImage).
	Image        string `toml:"image"`
	KernelParams string `toml:"kernel_params"`
	// DefaultVCPUs and DefaultMemoryMiB size a VM before the CRI sandbox
	// (or a standalone container's) resources are added.
	DefaultVCPUs     int    `toml:"default_vcpus"`
	DefaultMemoryMiB uint64 `toml:"default_memory"`
	// MaxVCPUs and MaxMemoryMiB cap the result (0: the host's CPUs, and
	// 512 GiB).
	MaxVCPUs     int    `toml:"max_vcpus"`
	MaxMemoryMiB uint64 `toml:"max_memory"`
	// VsockBackend is "vhost" (/dev/vhost-vsock, AF_VSOCK) or "userspace".
	VsockBackend string `toml:"vsock_backend"`
	// NetBackend is how the pod's NICs move frames: "vhost" (the host
	// kernel's vhost-net), "userspace" (the VMM's event loop) or "auto".
	NetBackend string `toml:"net_backend"`
	// IOThreads is how many iothreads serve the disks (0: the VMM loop).
	IOThreads int `toml:"iothreads"`
	// DiskIOPS limits each disk (0: unlimited).
	DiskIOPS uint64 `toml:"disk_iops"`
	// FreePageReporting gives the VM a balloon through which the guest
	// reports the memory it frees, and the host releases it.
	FreePageReporting bool `toml:"free_page_reporting"`
	// MemMerge offers guest RAM to the host kernel's same-page merging
	// (KSM, QEMU's mem-merge): where the host runs KSM, the pages that
	// VMs hold alike (the guest kernel's code) are kept once.
	MemMerge bool `toml:"mem_merge"`
	// BootTimeout bounds the wait for the guest agent, e.g. "30s".
	BootTimeout string `toml:"boot_timeout"`
	// ConsoleLog copies the guest console into the shim log.
	ConsoleLog bool `toml:"console_log"`
	// EnableAnnotations are regular expressions over the names after
	// "io.stratovirt.hypervisor." that pods may set.
	EnableAnnotations []string `toml:"enable_annotations"`
	// ValidKernelPaths and ValidInitrdPaths are path globs (filepath.Match)
	// that kernel and initrd annotations must match.
	ValidKernelPaths []string `toml:"valid_kernel_paths"`
	ValidInitrdPaths []string `toml:"valid_initrd_paths"`
}

// Runtime is the [runtime] table: the shim itself.
type Runtime struct {
	LogLevel string `toml:"log_level"`
	// RootfsFormat picks the image a directory rootfs is packed into
	// when it does not use the cache.
	RootfsFormat string `toml:"rootfs_format"`
	// RootfsCacheDir keeps one ext4 image per set of image layers, shared
	// by every container of that image on the host: a root from the
	// overlayfs snapshotter, writable or read-only, gets a sparse
	// copy-on-write overlay of it instead of an image of its own. Empty:
	// every container's root is packed into its own image.
	RootfsCacheDir string `toml:"rootfs_cache_dir"`
	// WorkDir holds per-VM state (images, sockets), one directory per
	// shim; "delete" removes it.
	WorkDir string `toml:"work_dir"`
	// SandboxCgroupOnly moves the shim with the VMM and vCPU threads into
	// the sandbox's cgroup when the spec names one.
	SandboxCgroupOnly bool `toml:"sandbox_cgroup_only"`
	// SandboxPauseImage runs a pod's sandbox container from its (pause)
	// image with runc in the guest, as an app container runs. By default
	// the guest agent holds the pod's namespaces itself, without the
	// image's disk and without runc.
	SandboxPauseImage bool `toml:"sandbox_pause_image"`
	// Debug keeps images and logs the guest console.
	Debug bool `toml:"debug"`
}

// Default returns the built-in configuration, used for keys the file
// leaves out.
func Default() Config {
	return Config{
		Hypervisor: Hypervisor{
			Kernel:            "/usr/share/stratovirt/vmlinux",
			Image:             "/usr/share/stratovirt/root.erofs",
			RuncImage:         "/usr/share/stratovirt/runc.erofs",
			DefaultVCPUs:      1,
			DefaultMemoryMiB:  512,
			VsockBackend:      VsockVhost,
			NetBackend:        NetAuto,
			IOThreads:         1,
			BootTimeout:       "30s",
			EnableAnnotations: []string{"default_vcpus", "default_memory"},
			ValidKernelPaths:  []string{"/usr/share/stratovirt/*"},
			ValidInitrdPaths:  []string{"/usr/share/stratovirt/*"},
		},
		Runtime: Runtime{
			LogLevel:          "info",
			RootfsFormat:      FormatAuto,
			RootfsCacheDir:    "/var/lib/stratovirt/rootfs-cache",
			WorkDir:           "/run/stratovirt",
			SandboxCgroupOnly: true,
		},
	}
}

// Path picks the configuration file: the runtime options' ConfigPath,
// else $STRATOVIRT_CONF_FILE, else DefaultPath.
func Path(optionsPath string) string {
	if optionsPath != "" {
		return optionsPath
	}
	if p := os.Getenv(EnvPath); p != "" {
		return p
	}
	return DefaultPath
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("configuration %q: %w", path, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxFileSize+1)); err != nil {
		return nil, fmt.Errorf("configuration %q: %w", path, err)
	}
	if buf.Len() > MaxFileSize {
		return nil, fmt.Errorf("configuration %q: larger than %d bytes", path, MaxFileSize)
	}
	c, err := Parse(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("configuration %q: %w", path, err)
	}
	return c, nil
}

// Parse decodes TOML over the defaults and validates the result. Unknown
// keys are errors, so that a typo is not silently ignored.
func Parse(data []byte) (*Config, error) {
	c := Default()
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var sme *toml.StrictMissingError
		if errors.As(err, &sme) {
			return nil, fmt.Errorf("unknown key: %s", strings.TrimSpace(sme.String()))
		}
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks ranges and enums; it does not require the kernel to
// exist (the VM configuration does when a VM is built).
func (c *Config) Validate() error {
	var errs []error
	h := &c.Hypervisor
	if h.Kernel == "" {
		errs = append(errs, errors.New("hypervisor.kernel: required"))
	}
	if h.Image == "" && h.Initrd == "" {
		errs = append(errs, errors.New("hypervisor.image or hypervisor.initrd: one is required (the guest's root filesystem)"))
	}
	if h.DefaultVCPUs < 1 || h.DefaultVCPUs > 254 {
		errs = append(errs, fmt.Errorf("hypervisor.default_vcpus: %d out of range [1, 254]", h.DefaultVCPUs))
	}
	if h.MaxVCPUs < 0 || h.MaxVCPUs > 254 {
		errs = append(errs, fmt.Errorf("hypervisor.max_vcpus: %d out of range [0, 254]", h.MaxVCPUs))
	}
	if h.DefaultMemoryMiB < 256 || h.DefaultMemoryMiB > 512<<10 {
		errs = append(errs, fmt.Errorf("hypervisor.default_memory: %d MiB out of range [256, 524288]", h.DefaultMemoryMiB))
	}
	if h.MaxMemoryMiB != 0 && (h.MaxMemoryMiB < h.DefaultMemoryMiB || h.MaxMemoryMiB > 512<<10) {
		errs = append(errs, fmt.Errorf("hypervisor.max_memory: %d MiB out of range [default_memory, 524288]", h.MaxMemoryMiB))
	}
	if h.VsockBackend != VsockVhost && h.VsockBackend != VsockUserspace {
		errs = append(errs, fmt.Errorf("hypervisor.vsock_backend: %q is not %q or %q", h.VsockBackend, VsockVhost, VsockUserspace))
	}
	if h.NetBackend != NetAuto && h.NetBackend != NetVhost && h.NetBackend != NetUserspace {
		errs = append(errs, fmt.Errorf("hypervisor.net_backend: %q is not %q, %q or %q", h.NetBackend, NetAuto, NetVhost, NetUserspace))
	}
	if h.IOThreads < 0 || h.IOThreads > 8 {
		errs = append(errs, fmt.Errorf("hypervisor.iothreads: %d out of range [0, 8]", h.IOThreads))
	}
	if h.DiskIOPS > 1000000 {
		errs = append(errs, fmt.Errorf("hypervisor.disk_iops: %d out of range [0, 1000000]", h.DiskIOPS))
	}
	if _, err := c.BootTimeout(); err != nil {
		errs = append(errs, err)
	}
	for _, re := range h.EnableAnnotations {
		if _, err := regexp.Compile("^(?:" + re + ")$"); err != nil {
			errs = append(errs, fmt.Errorf("hypervisor.enable_annotations: %q: %v", re, err))
		}
	}
	for _, g := range append(append([]string{}, h.ValidKernelPaths...), h.ValidInitrdPaths...) {
		if _, err := filepath.Match(g, "/"); err != nil || !filepath.IsAbs(g) {
			errs = append(errs, fmt.Errorf("hypervisor.valid_*_paths: %q is not an absolute glob", g))
		}
	}
	switch c.Runtime.RootfsFormat {
	case FormatAuto, FormatExt4, FormatErofs:
	default:
		errs = append(errs, fmt.Errorf("runtime.rootfs_format: %q is not auto, ext4 or erofs", c.Runtime.RootfsFormat))
	}
	switch c.Runtime.LogLevel {
	case "trace", "debug", "info", "warn", "warning", "error":
	default:
		errs = append(errs, fmt.Errorf("runtime.log_level: %q is not trace, debug, info, warn or error", c.Runtime.LogLevel))
	}
	if !filepath.IsAbs(c.Runtime.WorkDir) {
		errs = append(errs, fmt.Errorf("runtime.work_dir: %q is not absolute", c.Runtime.WorkDir))
	}
	if c.Runtime.RootfsCacheDir != "" && !filepath.IsAbs(c.Runtime.RootfsCacheDir) {
		errs = append(errs, fmt.Errorf("runtime.rootfs_cache_dir: %q is not absolute", c.Runtime.RootfsCacheDir))
	}
	return errors.Join(errs...)
}

// BootTimeout is Hypervisor.BootTimeout parsed (default 30 s).
func (c *Config) BootTimeout() (time.Duration, error) {
	if c.Hypervisor.BootTimeout == "" {
		return 30 * time.Second, nil
	}
	d, err := time.ParseDuration(c.Hypervisor.BootTimeout)
	if err != nil || d <= 0 || d > 10*time.Minute {
		return 0, fmt.Errorf("hypervisor.boot_timeout: %q is not a duration in (0, 10m]", c.Hypervisor.BootTimeout)
	}
	return d, nil
}

// AnnotationEnabled reports whether the hypervisor option name (the part
// after "io.stratovirt.hypervisor.") may be set by an annotation.
func (c *Config) AnnotationEnabled(name string) bool {
	for _, re := range c.Hypervisor.EnableAnnotations {
		if ok, _ := regexp.MatchString("^(?:"+re+")$", name); ok {
			return true
		}
	}
	return false
}

// PathAllowed reports whether path matches one of globs, after cleaning;
// relative paths never match.
func PathAllowed(path string, globs []string) bool {
	if !filepath.IsAbs(path) {
		return false
	}
	p := filepath.Clean(path)
	if p != path {
		return false
	}
	for _, g := range globs {
		if ok, _ := filepath.Match(g, p); ok {
			return true
		}
	}
	return false
}
