package network

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
)

// MaxResolvConf bounds the resolv.conf read from the host.
const MaxResolvConf = 64 << 10

// DNS is what a resolv.conf says.
type DNS struct {
	Servers, Searches, Options []string
}

// ParseResolvConf reads nameserver, search/domain and options lines
// (later search or domain lines replace earlier ones, as in the C
// resolver); comments, other keywords and malformed entries (with
// control characters) are skipped. At most 16 entries of each kind are
// kept.
func ParseResolvConf(b []byte) DNS {
	var d DNS
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), MaxResolvConf)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		vals := f[1:]
		for _, v := range vals {
			if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				vals = nil
				break
			}
		}
		if vals == nil {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(d.Servers) < 16 {
				d.Servers = append(d.Servers, vals[0])
			}
		case "search", "domain":
			d.Searches = append([]string(nil), vals[:min(len(vals), 16)]...)
		case "options":
			for _, o := range vals {
				if len(d.Options) < 16 {
					d.Options = append(d.Options, o)
				}
			}
		}
	}
	return d
}

// ReadResolvConf parses the resolv.conf at path (bounded).
func ReadResolvConf(path string) (DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return DNS{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxResolvConf+1))
	if err != nil {
		return DNS{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxResolvConf {
		return DNS{}, fmt.Errorf("%s: larger than %d bytes", path, MaxResolvConf)
	}
	return ParseResolvConf(b), nil
}
