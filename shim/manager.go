package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/runtime/oci"
	"github.com/stratovirt-go/stratovirt/runtime/rootfs"
)

// RuntimeName is the containerd runtime this shim serves.
const RuntimeName = "io.containerd.stratovirt.v2"

// Version is reported by -info and -v.
var Version = "0.1.0"

// Files the shim keeps in a bundle (removed with it by containerd).
const (
	pidFile     = "shim.pid"
	addressFile = "stratovirt-address"
	stateFile   = "stratovirt-state"
)

// DefaultSocketDir is containerd's default shim socket directory.
const DefaultSocketDir = "/run/containerd/s"

// Manager implements pkg/shim's Shim: the start, delete and -info
// actions of the binary.
type Manager struct{}

func (Manager) Name() string { return RuntimeName }

// Start starts (or finds, for a pod) the shim daemon and answers with
// task API version 3.
func (m Manager) Start(ctx context.Context, p *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error) {
	addr, err := StartDaemon(ctx, p.GetInstanceID(), p.GetContainerdGrpcAddress(), p.GetContainerdTtrpcAddress(),
		p.GetSocketDir(), p.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG)
	if err != nil {
		return nil, err
	}
	return &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}, nil
}

// StartDaemon runs in the "start" action with cwd = bundle: it picks the
// group (the CRI sandbox id, else id), and either returns the address of
// the group's running shim or starts a new daemon on a new socket passed
// as fd 3. It never writes to stdout or stderr.
func StartDaemon(ctx context.Context, id, grpcAddress, ttrpcAddress, socketDir string, debug bool) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	group := id
	if s, err := oci.Load("."); err == nil {
		group = oci.GroupID(s.Annotations, id)
	}
	if socketDir == "" {
		socketDir = DefaultSocketDir
	}
	addr, err := shim.CreateSocketAddress(ctx, socketDir, grpcAddress, group, false)
	if err != nil {
		return "", err
	}
	l, err := shim.NewSocket(addr)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("shim socket: %w", err)
		}
		if shim.CanConnect(addr) {
			return addr, nil // the pod's shim
		}
		if err := shim.RemoveSocket(addr); err != nil {
			return "", fmt.Errorf("remove stale shim socket: %w", err)
		}
		if l, err = shim.NewSocket(addr); err != nil {
			return "", fmt.Errorf("shim socket: %w", err)
		}
	}
	f, err := l.File()
	l.SetUnlinkOnClose(false) // the daemon serves the socket through fd 3
	l.Close()
	if err != nil {
		shim.RemoveSocket(addr)
		return "", err
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		shim.RemoveSocket(addr)
		return "", err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", grpcAddress}
	if debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	cmd.Env = append(os.Environ(), "GOMAXPROCS=4", "TTRPC_ADDRESS="+ttrpcAddress, "GRPC_ADDRESS="+grpcAddress)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		shim.RemoveSocket(addr)
		return "", fmt.Errorf("start shim daemon: %w", err)
	}
	go cmd.Wait()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		cmd.Process.Kill()
		shim.RemoveSocket(addr)
		return "", err
	}
	os.WriteFile(addressFile, []byte(addr), 0o600)
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		log.G(ctx).WithError(err).Debug("adjust OOM score")
	}
	return addr, nil
}

// Stop is the "delete" action: containerd runs it after the shim died
// (or to clean up a failed start). It kills the shim (and with it the
// in-process VM) if it still runs, waits for it to be gone, and removes
// the VM's state directory, its rootfs image, mounts and socket.
func (m Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	bundle, _ := os.Getwd()
	if o, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok && o.BundlePath != "" {
		bundle = o.BundlePath
	}
	st := shim.StopStatus{ExitStatus: 128 + int(syscall.SIGKILL), ExitedAt: time.Now()}
	if b, err := os.ReadFile(filepath.Join(bundle, pidFile)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			st.Pid = pid
			killShim(pid)
		}
	}
	if b, err := os.ReadFile(filepath.Join(bundle, stateFile)); err == nil {
		dir := filepath.Clean(strings.TrimSpace(string(b)))
		if filepath.IsAbs(dir) && dir != "/" {
			removeRecordedCgroup(dir)
			os.RemoveAll(dir)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(bundle, "work", "rootfs-*"))
	for _, p := range matches {
		os.Remove(p)
	}
	if err := rootfs.Unmount(filepath.Join(bundle, "rootfs")); err != nil {
		log.G(ctx).WithError(err).Warn("unmount rootfs")
	}
	if b, err := os.ReadFile(filepath.Join(bundle, addressFile)); err == nil {
		addr := strings.TrimSpace(string(b))
		if strings.HasPrefix(addr, "unix://") && !shim.CanConnect(addr) {
			shim.RemoveSocket(addr)
		}
	}
	return st, nil
}

// killShim SIGKILLs pid if it is this shim binary and waits (up to 10 s)
// until it is gone, so that its VM, taps and files are released.
func killShim(pid int) {
	exe, _ := os.Executable()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), filepath.Base(exe)) {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for range 1000 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Info answers -info.
func (m Manager) Info(ctx context.Context, _ io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{
		Name:    RuntimeName,
		Version: &types.RuntimeVersion{Version: Version},
	}, nil
}

// LegacyStart handles "start" from containerd before 2.3 (1.6, 1.7,
// 2.0-2.2), which pass identity in flags and env and expect a plain
// address on stdout; that daemon then serves task API v2 (and v3).
func LegacyStart(args []string, stdout io.Writer) error {
	var ns, id, address string
	debug := false
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		val := func() string {
			if k, v, ok := strings.Cut(a, "="); ok {
				a = k
				return v
			}
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch {
		case strings.HasPrefix(a, "namespace"):
			ns = val()
		case strings.HasPrefix(a, "id"):
			id = val()
		case strings.HasPrefix(a, "address"):
			address = val()
		case strings.HasPrefix(a, "publish-binary"), strings.HasPrefix(a, "bundle"), strings.HasPrefix(a, "socket"):
			val()
		case a == "debug":
			debug = true
		}
	}
	if ns == "" || id == "" {
		return errors.New("start: -namespace and -id are required")
	}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	addr, err := StartDaemon(ctx, id, address, os.Getenv("TTRPC_ADDRESS"), "", debug)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, addr)
	return err
}

// IsBootstrap reports whether stdin of "start" is a bootstrap request
// from containerd 2.3+ (and not legacy runtime options).
func IsBootstrap(input []byte, id, ns string) bool {
	var p bootapi.BootstrapParams
	if len(input) == 0 || protoUnmarshal(input, &p) != nil {
		return false
	}
	return p.InstanceID == id && p.Namespace == ns
}
