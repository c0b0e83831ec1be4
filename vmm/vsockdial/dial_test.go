package vsockdial

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vdev "github.com/stratovirt-go/stratovirt/vmm/virtio/vsock"
)

// fakeDevice plays the unix backend: it refuses the first refuse
// connections (the guest is not listening yet) and then answers OK
// followed at once by "hello".
func fakeDevice(t *testing.T, refuse int) (string, chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	lines := make(chan string, 16)
	go func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			lines <- line
			if i < refuse {
				c.Close()
				continue
			}
			c.Write([]byte("OK 1073741824\nhello"))
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return path, lines
}

func TestDialUnixRetries(t *testing.T) {
	path, lines := fakeDevice(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, TargetOf(vdev.Info{Backend: vdev.BackendUnix, GuestCID: 3, UDSPath: path}), 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Errorf("%T has no CloseWrite", c)
	}
	b := make([]byte, 5)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
		t.Fatalf("data after the handshake: %q, %v", b, err)
	}
	for range 3 {
		if l := <-lines; l != "CONNECT 1024\n" {
			t.Fatalf("handshake line %q", l)
		}
	}
}

func TestDialGivesUp(t *testing.T) {
	path, _ := fakeDevice(t, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, Target{UDSPath: path}, 1)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v", err)
	}
	if TargetOf(vdev.Info{Backend: vdev.BackendVhost, GuestCID: 9}).String() != "vsock:9" {
		t.Error("vhost target")
	}
}
