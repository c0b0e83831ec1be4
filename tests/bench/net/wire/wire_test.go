package wire

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func server(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go Serve(l, t.Logf)
	return l.Addr().String()
}

func TestTransfers(t *testing.T) {
	addr := server(t)
	for _, size := range []int64{0, 1, BufSize - 1, BufSize, 3*BufSize + 17} {
		for name, f := range map[string]func(net.Conn, int64) (time.Duration, error){"sink": Sink, "source": Source} {
			c, err := Dial(addr, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			d, err := f(c, size)
			c.Close()
			if err != nil {
				t.Fatalf("%s %d: %v", name, size, err)
			}
			if d <= 0 {
				t.Errorf("%s %d: duration %v", name, size, d)
			}
		}
	}
}

func TestRR(t *testing.T) {
	addr := server(t)
	c, err := Dial(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rtt, err := RR(c, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(rtt) != 50 || rtt[0] <= 0 || rtt[0] > rtt[49] {
		t.Fatalf("rtt %v", rtt)
	}
	for _, n := range []int{0, MaxRR + 1} {
		if _, err := RR(c, n); err == nil {
			t.Errorf("RR(%d) accepted", n)
		}
	}
}

// A server that stops early must make the client fail, not report a rate.
func TestShortSource(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		// Take the command first: closing with it unread would reset the
		// connection instead of ending it after 100 bytes.
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			c.Close()
			return
		}
		c.Write(make([]byte, 100))
		c.Close()
	}()
	c, err := Dial(l.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := Source(c, 1000); err == nil || !strings.Contains(err.Error(), "received 100 bytes") {
		t.Fatalf("short source: %v", err)
	}
}

func TestBadCommands(t *testing.T) {
	for _, cmd := range []string{"bogus\n", "source -1\n", "source x\n", "rr 99999999\n"} {
		a, b := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- serveConn(a) }()
		go b.Write([]byte(cmd))
		if err := <-done; err == nil {
			t.Errorf("%q accepted", cmd)
		}
		a.Close()
		b.Close()
	}
}

func TestMBps(t *testing.T) {
	if got := MBps(50e6, 2*time.Second); got != 25 {
		t.Errorf("MBps = %v", got)
	}
	if got := MBps(1, 0); got != 0 {
		t.Errorf("MBps(d=0) = %v", got)
	}
}
