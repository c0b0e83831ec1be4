package net

import (
	"errors"
	"fmt"
	gonet "net"
	"os"
	"testing"
)

// TestVhostMissingDevice: asking for vhost on a host without it is an
// error that names it, and the tap opened for the NIC is not left behind.
func TestVhostMissingDevice(t *testing.T) {
	canTap(t)
	name := fmt.Sprintf("svh%d", os.Getpid()%100000)
	_, err := New(Config{ID: "n0", TapName: name, TapFD: -1, Vhost: true, VhostPath: "/nonexistent/vhost-net"}, nil)
	if !errors.Is(err, ErrNoVhost) {
		t.Fatalf("err = %v, want ErrNoVhost", err)
	}
	if _, err := gonet.InterfaceByName(name); err == nil {
		t.Errorf("tap %s still exists after the failed New", name)
	}
}
