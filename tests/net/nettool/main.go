// Command nettool is the static helper of the network lab tests, run both
// in the guest and on the host side of the tap: "send ADDR SIZE" connects
// (retrying for up to two minutes) and sends SIZE bytes of a fixed
// pseudo-random stream, "recv ADDR" accepts one connection and reads it to
// the end. Both print the byte count, the SHA-256 and the throughput.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: nettool send ADDR SIZE | recv ADDR")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "send":
		err = send(os.Args[2], os.Args[3])
	case "recv":
		err = recv(os.Args[2])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Printf("NETTOOL ERROR %v\n", err)
		os.Exit(1)
	}
}

func send(addr, sizeArg string) error {
	size, err := strconv.ParseInt(sizeArg, 10, 64)
	if err != nil {
		return err
	}
	var c net.Conn
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dial %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(1, uint64(size)))
	h := sha256.New()
	buf := make([]byte, 256<<10)
	start := time.Now()
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		for i := 0; i+8 <= int(n); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		h.Write(buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	io.Copy(io.Discard, c) // wait for the peer to finish reading
	el := time.Since(start)
	fmt.Printf("SENT %d %s %.1f MB/s\n", size, hex.EncodeToString(h.Sum(nil)), float64(size)/el.Seconds()/1e6)
	return nil
}

func recv(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("LISTENING", addr)
	c, err := l.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	h := sha256.New()
	start := time.Now()
	n, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("RECV %d %s %.1f MB/s\n", n, hex.EncodeToString(h.Sum(nil)), float64(n)/el.Seconds()/1e6)
	return nil
}
