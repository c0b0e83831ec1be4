package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/runtime/translate"
)

func TestGuestFiles(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	hostname := filepath.Join(dir, "hostname")
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n10.88.7.2 web\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(hostname, []byte("web\n"), 0o600)
	os.WriteFile(big, []byte(strings.Repeat("x", maxGuestFile+1)), 0o644)

	got, err := guestFiles(translate.CRIFiles{Hosts: hosts, Hostname: hostname, ResolvConf: "/ignored"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != translate.HostsFile || !strings.Contains(string(got[0].Content), "10.88.7.2 web") ||
		got[1].Name != translate.HostnameFile || string(got[1].Content) != "web\n" || got[1].Mode != 0o600 {
		t.Errorf("files %v", got)
	}
	if got, err := guestFiles(translate.CRIFiles{}); err != nil || len(got) != 0 {
		t.Errorf("none: %v %v", got, err)
	}
	for _, bad := range []translate.CRIFiles{{Hosts: big}, {Hostname: filepath.Join(dir, "missing")}, {Hosts: dir}} {
		if _, err := guestFiles(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
