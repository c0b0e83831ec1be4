package vsock

import (
	"errors"
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

func TestVhostMissingDevice(t *testing.T) {
	_, err := NewVhost(Config{ID: "v", GuestCID: 3, VhostPath: "/nonexistent/vhost-vsock"}, nil)
	if !errors.Is(err, errNoVhost) {
		t.Fatalf("err = %v, want errNoVhost", err)
	}
	// The default backend falls back to unix only with a socket path.
	if _, err := New(Config{ID: "v", GuestCID: 3, VhostPath: "/nonexistent/vhost-vsock"}, nil); err == nil ||
		!strings.Contains(err.Error(), "no uds-path") {
		t.Fatalf("default backend without vhost or uds-path: %v", err)
	}
	if _, err := New(Config{ID: "v", GuestCID: 2}, nil); err == nil {
		t.Fatal("guest CID 2 accepted")
	}
}

func TestVhostCIDConflict(t *testing.T) {
	if !VhostAvailable() {
		t.Skip("no usable " + VhostDevice)
	}
	loop, err := eventloop.New("test-vhost", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	a, err := NewVhost(Config{ID: "a", GuestCID: 0x7ffff123}, loop)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Features()&(1<<32) != 0 {
		t.Errorf("features %#x include VERSION_1 (the transport adds it)", a.Features())
	}
	_, err = NewVhost(Config{ID: "b", GuestCID: 0x7ffff123}, loop)
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("second VM with the same CID: %v", err)
	}
	a.Close()
	b, err := NewVhost(Config{ID: "b", GuestCID: 0x7ffff123}, loop)
	if err != nil {
		t.Fatalf("CID not released by Close: %v", err)
	}
	b.Close()
}
