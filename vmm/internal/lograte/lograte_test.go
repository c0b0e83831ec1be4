package lograte

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestLimiter(t *testing.T) {
	var out bytes.Buffer
	saved, level := logrus.StandardLogger().Out, logrus.GetLevel()
	logrus.SetOutput(&out)
	logrus.SetLevel(logrus.DebugLevel)
	t.Cleanup(func() { logrus.SetOutput(saved); logrus.SetLevel(level) })

	l := Limiter{Every: time.Hour}
	for range 3 {
		l.Warn("accept: too many open files")
	}
	if n := strings.Count(out.String(), "level=warning"); n != 1 {
		t.Fatalf("%d warnings in an interval, want 1:\n%s", n, out.String())
	}
	if n := strings.Count(out.String(), "level=debug"); n != 2 {
		t.Fatalf("%d debug lines, want 2:\n%s", n, out.String())
	}
	l.last = time.Now().Add(-2 * time.Hour) // the interval has passed
	out.Reset()
	l.Warn("accept: too many open files")
	if got := out.String(); !strings.Contains(got, "level=warning") || !strings.Contains(got, "and 2 more since the last warning") {
		t.Fatalf("the next interval's warning: %s", got)
	}
}
