package container

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent/runc"
)

func inotifyBytes(wd int32, mask uint32, name string) []byte {
	b := make([]byte, unix.SizeofInotifyEvent+len(name))
	binary.NativeEndian.PutUint32(b, uint32(wd))
	binary.NativeEndian.PutUint32(b[4:], mask)
	binary.NativeEndian.PutUint32(b[12:], uint32(len(name)))
	copy(b[unix.SizeofInotifyEvent:], name)
	return b
}

func TestParseInotify(t *testing.T) {
	two := append(inotifyBytes(3, unix.IN_MODIFY, ""), inotifyBytes(4, unix.IN_IGNORED, "name\x00\x00\x00\x00")...)
	for _, tc := range []struct {
		name string
		b    []byte
		want []inotifyEvent
	}{
		{"empty", nil, nil},
		{"one", inotifyBytes(7, unix.IN_MODIFY, ""), []inotifyEvent{{7, unix.IN_MODIFY}}},
		{"two, the second named", two, []inotifyEvent{{3, unix.IN_MODIFY}, {4, unix.IN_IGNORED}}},
		{"short header", two[:10], nil},
		{"name cut short", two[:len(two)-1], []inotifyEvent{{3, unix.IN_MODIFY}}},
	} {
		got := parseInotify(tc.b)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			}
		}
	}
	huge := inotifyBytes(1, unix.IN_MODIFY, "")
	binary.NativeEndian.PutUint32(huge[12:], 1<<31)
	if got := parseInotify(huge); len(got) != 0 {
		t.Errorf("a name length past the buffer: %v", got)
	}
}

// TestOOMWatch: a change of a watched memory.events that raises oom_kill
// becomes one OOM event, with no polling (OOMPoll is an hour); after the
// watch is removed a change is not reported.
func TestOOMWatch(t *testing.T) {
	m, err := NewManager(Config{StateDir: t.TempDir(), Runc: &runc.Runc{Root: t.TempDir()}, OOMPoll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.oomWatch == nil {
		t.Skip("no inotify here")
	}
	dir := t.TempDir()
	events := filepath.Join(dir, "memory.events")
	write := func(kills int) {
		t.Helper()
		b := []byte("low 0\nhigh 0\nmax 3\noom 2\noom_kill " + string(rune('0'+kills)) + "\n")
		if err := os.WriteFile(events, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	c := &Container{id: "c", cgroupDir: dir, oomWD: -1}
	if !m.oomWatch.add(c, dir) {
		t.Fatal("no watch on a memory.events file")
	}
	if (&oomWatch{f: m.oomWatch.f, fd: m.oomWatch.fd, wds: map[int32]*Container{}}).add(&Container{id: "none"}, t.TempDir()) {
		t.Error("a watch on a directory without memory.events")
	}
	write(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := m.OOMEvent(ctx)
	if err != nil || ev.ContainerId != "c" || ev.OomKills != 1 {
		t.Fatalf("OOM event %v, %v; want container c, 1 kill", ev, err)
	}
	write(1) // modified, oom_kill unchanged: no event
	m.oomWatch.remove(c)
	write(2)
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if ev, err := m.OOMEvent(short); err == nil {
		t.Errorf("event %v after an unchanged count or after the watch was removed", ev)
	}
	m.oomWatch.remove(c) // twice: nothing left to remove
	m.Close()
	m.Close()
	select {
	case <-m.oomWatch.done:
	case <-time.After(5 * time.Second):
		t.Error("the OOM watch still reads after Close")
	}
}
