// Command vsockpeer is the guest side of the vsock lab tests: a static
// program in the test initramfs. It serves an echo service on vsock port
// 1024 and a line-based control service on port 1030 through which the
// host asks it to connect to the host (guest-to-host transfers), to touch
// and release memory, and to allocate and hold memory (for the balloon
// tests). Every reply is one line starting with OK or ERR.
package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/mdlayher/vsock"
)

const (
	echoPort    = 1024
	controlPort = 1030
	hostCID     = 2
)

func main() {
	echo, err := vsock.Listen(echoPort, nil)
	if err != nil {
		fmt.Println("PEER listen:", err)
		os.Exit(1)
	}
	ctl, err := vsock.Listen(controlPort, nil)
	if err != nil {
		fmt.Println("PEER listen:", err)
		os.Exit(1)
	}
	fmt.Println("PEER READY")
	go serve(echo, echoConn)
	serve(ctl, control)
}

func serve(l net.Listener, h func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Println("PEER accept:", err)
			os.Exit(1)
		}
		go h(c)
	}
}

// echoConn copies everything back, then half-closes.
func echoConn(c net.Conn) {
	defer c.Close()
	io.Copy(c, c)
	c.(*vsock.Conn).CloseWrite()
}

var held [][]byte

func control(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		reply := "ERR unknown command"
		switch {
		case len(f) == 4 && f[0] == "connect":
			reply = connect(atoi(f[1]), atoi(f[2]), atoi(f[3]))
		case len(f) == 2 && f[0] == "fill":
			b := make([]byte, atoi(f[1])<<20)
			touch(b)
			b = nil
			debug.FreeOSMemory()
			reply = "OK filled"
		case len(f) == 2 && f[0] == "alloc":
			b := make([]byte, atoi(f[1])<<20)
			touch(b)
			held = append(held, b)
			reply = "OK allocated"
		case len(f) == 1 && f[0] == "free":
			held = nil
			debug.FreeOSMemory()
			reply = "OK freed"
		}
		fmt.Fprintln(c, reply)
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func touch(b []byte) {
	for i := 0; i < len(b); i += 4096 {
		b[i] = byte(i>>12) | 1
	}
}

// pattern fills b with a stream that depends on seed and offset.
func pattern(b []byte, seed, off int) {
	for i := range b {
		x := uint32(off+i)*2654435761 + uint32(seed)*40503
		b[i] = byte(x >> 24)
	}
}

// connect opens conns parallel connections to the host's port, sends
// size bytes on each, half-closes and checks that the echo matches.
func connect(port, conns, size int) string {
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- transfer(port, i, size)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return "ERR " + err.Error()
		}
	}
	return fmt.Sprintf("OK %d bytes", conns*size)
}

func transfer(port, seed, size int) error {
	c, err := vsock.Dial(hostCID, uint32(port), nil)
	if err != nil {
		return fmt.Errorf("dial host port %d: %v", port, err)
	}
	defer c.Close()
	sent := sha256.New()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for off := 0; off < size; off += len(buf) {
			n := min(len(buf), size-off)
			pattern(buf[:n], seed, off)
			sent.Write(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				done <- err
				return
			}
		}
		done <- c.CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if werr := <-done; werr != nil {
		return fmt.Errorf("conn %d write: %v", seed, werr)
	}
	if err != nil || n != int64(size) {
		return fmt.Errorf("conn %d: echoed %d of %d bytes: %v", seed, n, size, err)
	}
	if string(got.Sum(nil)) != string(sent.Sum(nil)) {
		return fmt.Errorf("conn %d: echo checksum mismatch", seed)
	}
	return nil
}
