package network

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseResolvConf(t *testing.T) {
	for _, c := range []struct {
		in   string
		want DNS
	}{
		{"", DNS{}},
		{"nameserver 10.0.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
			DNS{Servers: []string{"10.0.0.10"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"}}},
		{"# comment\nnameserver 1.1.1.1 # trailing\n; other\nnameserver 8.8.8.8\ndomain a.example\nsearch b.example\nsortlist 1.2.3.4\n",
			DNS{Servers: []string{"1.1.1.1", "8.8.8.8"}, Searches: []string{"b.example"}}},
		{"nameserver\noptions rotate timeout:1\n", DNS{Options: []string{"rotate", "timeout:1"}}},
		{"nameserver 1.2.3.4\x01\nnameserver 5.6.7.8", DNS{Servers: []string{"5.6.7.8"}}},
	} {
		if got := ParseResolvConf([]byte(c.in)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseResolvConf(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestParseResolvConfBounded(t *testing.T) {
	d := ParseResolvConf([]byte(strings.Repeat("nameserver 1.1.1.1\n", 100)))
	if len(d.Servers) != 16 {
		t.Errorf("%d servers kept, want 16", len(d.Servers))
	}
}

func TestReadResolvConf(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	os.WriteFile(p, []byte("nameserver 10.96.0.10\n"), 0o644)
	d, err := ReadResolvConf(p)
	if err != nil || len(d.Servers) != 1 || d.Servers[0] != "10.96.0.10" {
		t.Errorf("ReadResolvConf = %+v, %v", d, err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, MaxResolvConf+1), 0o644)
	if _, err := ReadResolvConf(big); err == nil {
		t.Error("no error for an oversized file")
	}
	if _, err := ReadResolvConf(filepath.Join(dir, "none")); err == nil {
		t.Error("no error for a missing file")
	}
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 1.1.1.1\nsearch a b\noptions ndots:2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := ParseResolvConf(b)
		if len(d.Servers) > 16 || len(d.Searches) > 16 || len(d.Options) > 16 {
			t.Fatalf("unbounded: %+v", d)
		}
		for _, l := range [][]string{d.Servers, d.Searches, d.Options} {
			for _, s := range l {
				if s == "" || strings.ContainsAny(s, " \t\n\r\x00") {
					t.Fatalf("bad entry %q", s)
				}
			}
		}
	})
}
