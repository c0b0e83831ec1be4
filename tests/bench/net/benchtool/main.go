// Command benchtool is both ends of the network benchmark
// (tests/bench/net), built static (CGO_ENABLED=0) so that the same binary
// runs in the busybox guest and on the host side of the tap:
//
//	benchtool serve ADDR                     guest: serve the wire protocol
//	benchtool client ADDR sink|source SIZE   host: time one bulk transfer
//	benchtool client ADDR rr N               host: N one-byte round trips
//
// The client prints one line, "RESULT sink|source SIZE SECONDS MBPS" or
// "RESULT rr N MEDIAN_US MIN_US MAX_US".
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/bench/net/wire"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Printf("BENCHTOOL ERROR %v\n", err)
		os.Exit(1)
	}
}

const usage = "usage: benchtool serve ADDR | client ADDR sink|source SIZE | client ADDR rr N"

func run(args []string) error {
	if len(args) < 2 {
		return errors.New(usage)
	}
	switch args[0] {
	case "serve":
		l, err := net.Listen("tcp", args[1])
		if err != nil {
			return err
		}
		fmt.Println("BENCHTOOL SERVING", l.Addr())
		return wire.Serve(l, func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
	case "client":
		if len(args) != 4 {
			return errors.New(usage)
		}
		n, err := strconv.ParseInt(args[3], 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("bad count %q", args[3])
		}
		c, err := wire.Dial(args[1], 3*time.Minute)
		if err != nil {
			return err
		}
		defer c.Close()
		switch args[2] {
		case "sink", "source":
			f := wire.Sink
			if args[2] == "source" {
				f = wire.Source
			}
			d, err := f(c, n)
			if err != nil {
				return err
			}
			fmt.Printf("RESULT %s %d %.6f %.2f\n", args[2], n, d.Seconds(), wire.MBps(n, d))
		case "rr":
			rtt, err := wire.RR(c, int(min(n, wire.MaxRR)))
			if err != nil {
				return err
			}
			us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
			fmt.Printf("RESULT rr %d %.1f %.1f %.1f\n", len(rtt), us(rtt[len(rtt)/2]), us(rtt[0]), us(rtt[len(rtt)-1]))
		default:
			return fmt.Errorf("unknown workload %q", args[2])
		}
		return nil
	}
	return errors.New(usage)
}
