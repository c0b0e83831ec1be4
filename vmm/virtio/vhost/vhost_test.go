package vhost

import (
	"errors"
	"strings"
	"testing"
)

func TestOpenErrors(t *testing.T) {
	for _, c := range []struct {
		path        string
		unavailable bool
		want        string
	}{
		{"/nonexistent/vhost-net", true, "dev0: open /nonexistent/vhost-net"},
		// Not a vhost device: the first vhost ioctl fails, and that is
		// not "unavailable" (it is a wrong path, to be reported as is).
		{"/dev/null", false, "dev0: VHOST_SET_OWNER"},
	} {
		d, err := Open("dev0", c.path, 2)
		if err == nil {
			d.Close()
			t.Errorf("Open(%s) succeeded", c.path)
			continue
		}
		if errors.Is(err, ErrUnavailable) != c.unavailable || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%s) = %v; want %q, unavailable %v", c.path, err, c.want, c.unavailable)
		}
	}
	if Available("/nonexistent/vhost-net") {
		t.Error("Available(missing path) = true")
	}
}
