package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/mdlayher/vsock"

	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

// VsockDialer returns the dialer for a VM's vsock device: AF_VSOCK to the
// guest CID (vhost backend) or the userspace backend's unix socket with
// the "CONNECT <port>\n" / "OK <port>\n" handshake.
func VsockDialer(v *vmconfig.Vsock) Dialer {
	if v.Backend == vmconfig.VsockBackendUnix {
		return func(ctx context.Context, port uint32) (net.Conn, error) { return dialHybrid(ctx, v.UDSPath, port) }
	}
	return func(ctx context.Context, port uint32) (net.Conn, error) {
		return dialVsock(ctx, uint32(v.GuestCID), port)
	}
}

// dialVsock connects an AF_VSOCK stream socket, bounded by ctx (the
// kernel's own connect timeout is 2 s).
func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := vsock.Dial(cid, port, nil)
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("vsock connect %d:%d: %w", cid, port, r.err)
		}
		return r.c, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// dialHybrid connects through the userspace backend's unix socket.
func dialHybrid(ctx context.Context, path string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	dl := time.Now().Add(5 * time.Second)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		dl = cd
	}
	c.SetDeadline(dl)
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, err
	}
	// Read the reply byte by byte so nothing after it is consumed.
	line, err := readLine(c, 64)
	if err != nil || !strings.HasPrefix(line, "OK ") {
		c.Close()
		if err == nil {
			err = fmt.Errorf("handshake reply %q", line)
		}
		return nil, fmt.Errorf("vsock %s port %d: %w", path, port, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func readLine(c net.Conn, max int) (string, error) {
	var b strings.Builder
	one := make([]byte, 1)
	for b.Len() < max {
		if _, err := c.Read(one); err != nil {
			return b.String(), err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
	return b.String(), errors.New("handshake reply too long")
}
