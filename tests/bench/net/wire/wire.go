// Package wire is the protocol of the network benchmark's guest server and
// host client (tests/bench/net): the guest serves, the host connects and
// drives every measurement, timing it on its side. A connection starts
// with one command line:
//
//	sink         the client sends bytes until it half-closes; the server
//	             answers the count ("<n>\n") and closes (host→guest)
//	source N     the server sends N zero bytes and closes (guest→host)
//	rr N         N one-byte request/response exchanges (round-trip latency)
package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BufSize is the size of every read and write of bulk data.
const BufSize = 256 << 10

// MaxRR bounds the exchanges of one rr command.
const MaxRR = 1 << 20

// Serve accepts connections on l until it fails and serves each on its own
// goroutine. Errors of single connections are reported to logf.
func Serve(l net.Listener, logf func(format string, args ...any)) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if err := serveConn(c); err != nil && logf != nil {
				logf("wire: %s: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

func serveConn(c net.Conn) error {
	r := bufio.NewReaderSize(c, BufSize)
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read command: %w", err)
	}
	cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch cmd {
	case "sink":
		n, err := io.Copy(io.Discard, r)
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		_, err = fmt.Fprintf(c, "%d\n", n)
		return err
	case "source":
		n, err := strconv.ParseInt(arg, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("source: bad size %q", arg)
		}
		buf := make([]byte, BufSize)
		for left := n; left > 0; {
			k := min(int64(len(buf)), left)
			if _, err := c.Write(buf[:k]); err != nil {
				return fmt.Errorf("source: %w", err)
			}
			left -= k
		}
		return nil
	case "rr":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 0 || n > MaxRR {
			return fmt.Errorf("rr: bad count %q", arg)
		}
		b := make([]byte, 1)
		for range n {
			if _, err := io.ReadFull(r, b); err != nil {
				return fmt.Errorf("rr: %w", err)
			}
			if _, err := c.Write(b); err != nil {
				return fmt.Errorf("rr: %w", err)
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// Dial connects to addr, retrying until wait has passed (the guest may
// still be booting).
func Dial(addr string, wait time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Sink sends size bytes to the server on c (host→guest) and returns the
// time until the server confirmed it received them all.
func Sink(c net.Conn, size int64) (time.Duration, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, errors.New("sink needs a TCP connection")
	}
	buf := make([]byte, BufSize)
	start := time.Now()
	if _, err := io.WriteString(c, "sink\n"); err != nil {
		return 0, err
	}
	for left := size; left > 0; {
		k := min(int64(len(buf)), left)
		if _, err := c.Write(buf[:k]); err != nil {
			return 0, fmt.Errorf("sink: %w", err)
		}
		left -= k
	}
	if err := tc.CloseWrite(); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	el := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("sink: read count: %w", err)
	}
	if got := strings.TrimSpace(line); got != strconv.FormatInt(size, 10) {
		return 0, fmt.Errorf("sink: server received %s bytes, sent %d", got, size)
	}
	return el, nil
}

// Source asks the server on c for size bytes (guest→host) and returns the
// time until the last arrived.
func Source(c net.Conn, size int64) (time.Duration, error) {
	buf := make([]byte, BufSize)
	start := time.Now()
	if _, err := fmt.Fprintf(c, "source %d\n", size); err != nil {
		return 0, err
	}
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("source: after %d bytes: %w", n, err)
		}
	}
	el := time.Since(start)
	if n != size {
		return 0, fmt.Errorf("source: received %d bytes, want %d", n, size)
	}
	return el, nil
}

// RR runs n one-byte request/response exchanges on c and returns their
// round-trip times, sorted.
func RR(c net.Conn, n int) ([]time.Duration, error) {
	if n < 1 || n > MaxRR {
		return nil, fmt.Errorf("rr: count %d out of range", n)
	}
	if _, err := fmt.Fprintf(c, "rr %d\n", n); err != nil {
		return nil, err
	}
	rtt := make([]time.Duration, n)
	b := []byte{'x'}
	for i := range n {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return nil, fmt.Errorf("rr %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, fmt.Errorf("rr %d: %w", i, err)
		}
		rtt[i] = time.Since(start)
	}
	slices.Sort(rtt)
	return rtt, nil
}

// MBps is size bytes over d in decimal megabytes per second.
func MBps(size int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(size) / d.Seconds() / 1e6
}
