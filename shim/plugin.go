package shim

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
	"github.com/stratovirt-go/stratovirt/vmm"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

// Register registers the task service as the shim's TTRPC plugin, with
// f building the VMs (NewVMMachine in production).
func Register(f MachineFactory) {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			pub, ok := pp.(publisherFunc)
			if !ok {
				return nil, errors.New("publisher plugin has no Publish")
			}
			ns, _ := namespaces.Namespace(ic.Context)
			return NewService(ic.Context, pub, ss.(shutdown.Service), ns, f), nil
		},
	})
}

// consoleLog copies the guest console, line by line, into the shim log.
type consoleLog struct {
	id   string
	line []byte
}

func (c *consoleLog) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' || len(c.line) >= 1024 {
			log.L.WithField("vm", c.id).Debug("guest: " + strings.TrimRight(string(c.line), "\r"))
			c.line = c.line[:0]
			continue
		}
		c.line = append(c.line, b)
	}
	return len(p), nil
}

// followAgentLog copies the guest agent's log stream, line by line, into
// the shim log at debug level until the VM ends: with the guest console
// copied too (console_log or debug), everything the agent logs, not only
// the warnings it also prints on the console.
func followAgentLog(ctx context.Context, sb *sandbox.Sandbox, id string) {
	c, err := sb.OpenStream(ctx, stream.Log, "", "")
	if err != nil {
		log.G(ctx).WithError(err).Warn("follow the agent log")
		return
	}
	defer c.Close()
	copyAgentLog(ctx, c, id)
}

// copyAgentLog logs each line of r (the agent's log) at debug level. A
// line longer than maxAgentLogLine is cut.
func copyAgentLog(ctx context.Context, r io.Reader, id string) {
	br := bufio.NewReaderSize(r, maxAgentLogLine)
	for {
		line, isPrefix, err := br.ReadLine()
		if err != nil {
			return
		}
		log.G(ctx).WithField("vm", id).Debug("agent: " + strings.ToValidUTF8(string(line), "?"))
		for isPrefix { // drop the rest of a cut line
			if _, isPrefix, err = br.ReadLine(); err != nil {
				return
			}
		}
	}
}

// maxAgentLogLine bounds one agent log line copied into the shim log.
const maxAgentLogLine = 4096

// NewVMMachine builds the in-process microVM with a vsock device for the
// agent: vhost-vsock at a random free CID, or the userspace backend's
// socket in stateDir.
func NewVMMachine(ctx context.Context, cfg *shimconfig.Config, vmc *vmconfig.VMConfig, stateDir string) (sandbox.Machine, error) {
	var console io.Writer = io.Discard
	if cfg.Hypervisor.ConsoleLog || cfg.Runtime.Debug {
		console = &consoleLog{id: vmc.Name}
	}
	// The vCPU threads run under the standalone VMM's vCPU seccomp
	// allow-list (docs/seccomp.md, docs/security.md).
	onVCPU, err := sandbox.VCPUSeccomp()
	if err != nil {
		return nil, err
	}
	var last error
	for range 8 {
		vs := &vmconfig.Vsock{ID: "vsock0", GuestCID: randomCID()}
		if cfg.Hypervisor.VsockBackend == shimconfig.VsockUserspace {
			vs.Backend, vs.UDSPath = vmconfig.VsockBackendUnix, filepath.Join(stateDir, "vsock.sock")
		} else {
			vs.Backend = vmconfig.VsockBackendVhost
		}
		c := *vmc
		c.Vsock = vs
		m, err := sandbox.NewVM(&c, vmm.Options{SerialOut: console, OnVCPUThread: onVCPU})
		if err == nil {
			return m, nil
		}
		last = err
		if !errors.Is(err, unix.EADDRINUSE) || vs.Backend != vmconfig.VsockBackendVhost {
			break
		}
	}
	return nil, fmt.Errorf("build VM: %w", last)
}

// randomCID picks a guest CID in [3, 2^31).
func randomCID() uint64 {
	var b [4]byte
	rand.Read(b[:])
	return 3 + uint64(binary.LittleEndian.Uint32(b[:])%(1<<31-3))
}
