package stdio

import (
	"errors"
	"net"
	"os"
	"testing"

	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
)

// An exec's streams may arrive before runc handed its pty over: Attach
// answers ErrNotYet (sending nothing) until SetConsole, then accepts.
func TestAttachTerminalNotYet(t *testing.T) {
	s, err := New(Config{Stdin: true, Stdout: true, Terminal: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	host, agent := net.Pipe()
	defer host.Close()
	if err := s.Attach(stream.Stdout, agent); !errors.Is(err, ErrNotYet) {
		t.Fatalf("before the console: %v, want ErrNotYet", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s.SetConsole(r)
	go func() {
		if err := s.Attach(stream.Stdout, agent); err != nil {
			t.Errorf("after the console: %v", err)
			agent.Close()
		}
	}()
	if err := stream.ReadReply(host); err != nil {
		t.Fatalf("reply: %v", err)
	}
	w.Write([]byte("hi"))
	buf := make([]byte, 2)
	if _, err := host.Read(buf); err != nil || string(buf) != "hi" {
		t.Errorf("read %q %v", buf, err)
	}
}
