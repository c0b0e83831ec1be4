package shim

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func TestCopyAgentLog(t *testing.T) {
	long := strings.Repeat("x", maxAgentLogLine+10)
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"lines", "a\nb\r\nc", []string{"agent: a", "agent: b", "agent: c"}},
		{"empty", "", nil},
		{"long line cut", long + "\nnext\n", []string{"agent: " + long[:maxAgentLogLine], "agent: next"}},
		{"invalid utf-8", "a\xffb\n", []string{"agent: a?b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, hook := logtest.NewNullLogger()
			l.SetLevel(logrus.DebugLevel)
			ctx := log.WithLogger(context.Background(), logrus.NewEntry(l))
			copyAgentLog(ctx, strings.NewReader(tc.in), "vm1")
			var got []string
			for _, e := range hook.AllEntries() {
				if e.Level != logrus.DebugLevel || e.Data["vm"] != "vm1" {
					t.Errorf("entry %+v: want debug level and vm=vm1", e)
				}
				got = append(got, e.Message)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
