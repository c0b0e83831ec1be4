package qmp

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type client struct {
	t  *testing.T
	c  *net.UnixConn
	rd *bufio.Reader
}

func dial(t *testing.T, path string) *client {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, rd: bufio.NewReader(c)}
}

// line reads one server message.
func (c *client) line() map[string]any {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := c.rd.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(l), &m); err != nil {
		c.t.Fatalf("server sent invalid JSON %q: %v", l, err)
	}
	return m
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// cmd sends s and returns the next message.
func (c *client) cmd(s string) map[string]any {
	c.t.Helper()
	c.send(s)
	return c.line()
}

// negotiated dials, checks the greeting and negotiates.
func negotiated(t *testing.T, path string) *client {
	t.Helper()
	c := dial(t, path)
	c.line()
	if r := c.cmd(`{"execute":"qmp_capabilities"}`); r["return"] == nil {
		t.Fatalf("negotiation: %v", r)
	}
	return c
}

func errClass(m map[string]any) (string, string) {
	e, _ := m["error"].(map[string]any)
	if e == nil {
		return "", ""
	}
	c, _ := e["class"].(string)
	d, _ := e["desc"].(string)
	return c, d
}

func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qmp.sock")
	s, err := Listen(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Serve()
	t.Cleanup(func() { s.Close() })
	return s
}

func TestGreetingAndNegotiation(t *testing.T) {
	s := newServer(t, Options{Package: "StratoVirt-test"})
	c := dial(t, s.Path())
	g := c.line()
	b, _ := json.Marshal(g)
	if want := `{"QMP":{"capabilities":[],"version":{"package":"StratoVirt-test","qemu":{"major":5,"micro":1,"minor":0}}}}`; string(b) != want {
		t.Errorf("greeting %s\nwant     %s", b, want)
	}
	if cl, d := errClass(c.cmd(`{"execute":"query-version"}`)); cl != ClassCommandNotFound ||
		d != "Expecting capabilities negotiation with 'qmp_capabilities'" {
		t.Errorf("before negotiation: %s %s", cl, d)
	}
	if cl, _ := errClass(c.cmd(`{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}`)); cl != ClassGeneric {
		t.Errorf("oob accepted: %s", cl)
	}
	if r := c.cmd(`{"execute":"qmp_capabilities","arguments":{"enable":[]}}`); r["return"] == nil {
		t.Errorf("negotiation failed: %v", r)
	}
	if cl, _ := errClass(c.cmd(`{"execute":"qmp_capabilities"}`)); cl != ClassCommandNotFound {
		t.Errorf("second negotiation: %s", cl)
	}
	r := c.cmd(`{"execute":"query-version"}`)
	if v, _ := r["return"].(map[string]any); v["package"] != "StratoVirt-test" {
		t.Errorf("query-version: %v", r)
	}
	fi, err := os.Stat(s.Path())
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, %v", fi.Mode(), err)
	}
}

func TestListenErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "exists")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(p, Options{}); err == nil || err.Error() != `api-channel socket "`+p+`" already exists` {
		t.Errorf("existing file: %v", err)
	}
	if _, err := Listen("/nonexistent-dir/q.sock", Options{}); err == nil || !strings.Contains(err.Error(), "bind api-channel socket") {
		t.Errorf("missing dir: %v", err)
	}
}

func TestCloseRemovesSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "qmp.sock")
	s, err := Listen(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Serve()
	c := dial(t, p)
	c.line()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Errorf("socket still there: %v", err)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.rd.ReadString('\n'); err == nil {
		t.Error("client not disconnected")
	}
}

func TestInputHandling(t *testing.T) {
	s := newServer(t, Options{MaxMessage: 1024})
	c := negotiated(t, s.Path())
	tests := []struct {
		name, in  string
		wantClass string
		wantDesc  string // substring
		wantID    any
	}{
		{"unknown command", `{"execute":"frobnicate"}`, ClassCommandNotFound, "The command frobnicate has not been found", nil},
		{"numeric id echoed", `{"execute":"frobnicate","id":7}`, ClassCommandNotFound, "", 7.0},
		{"string id echoed", `{"execute":"query-version","id":"abc"}`, "", "", "abc"},
		{"not an object", `[1,2]`, ClassGeneric, "QMP input must be a JSON object", nil},
		{"no execute", `{"arguments":{}}`, ClassGeneric, "QMP input lacks member 'execute'", nil},
		{"execute not string", `{"execute":5}`, ClassGeneric, "QMP input member 'execute' must be a string", nil},
		{"arguments not object", `{"execute":"query-version","arguments":[]}`, ClassGeneric, "QMP input member 'arguments' must be an object", nil},
		{"unknown member", `{"execute":"query-version","bogus":1}`, ClassGeneric, "QMP input member 'bogus' is unexpected", nil},
		{"bad JSON inside object", `{"execute":}`, ClassGeneric, "JSON parse error", nil},
		{"stray text", "hello\n", ClassGeneric, "JSON parse error, unexpected character 'h' outside an object", nil},
		{"unexpected argument", `{"execute":"getfd","arguments":{"fdname":"x","y":1}}`, ClassGeneric, "Parameter 'y' is unexpected", nil},
		{"wrong argument type", `{"execute":"getfd","arguments":{"fdname":1}}`, ClassGeneric, "Invalid parameter type for 'fdname'", nil},
		{"too long", `{"execute":"` + strings.Repeat("x", 2000) + `"}`, ClassGeneric, "QMP input is longer than 1024 bytes", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := c.cmd(tc.in)
			cl, d := errClass(r)
			if cl != tc.wantClass || !strings.Contains(d, tc.wantDesc) {
				t.Errorf("reply %v, want class %q desc ~%q", r, tc.wantClass, tc.wantDesc)
			}
			if tc.wantID != nil && r["id"] != tc.wantID {
				t.Errorf("id %v, want %v", r["id"], tc.wantID)
			}
			// The server still answers.
			if r := c.cmd(`{"execute":"query-version"}`); r["return"] == nil {
				t.Fatalf("server stopped answering: %v", r)
			}
		})
	}
}

func TestPipelinedAndSplitInput(t *testing.T) {
	s := newServer(t, Options{})
	c := negotiated(t, s.Path())
	// Three commands in one write, with a string holding braces and an
	// escaped quote.
	c.send(`{"execute":"query-version","id":1}{"execute":"nope\"}{","id":2}` + "\n" + ` {"execute":"query-version","id":3}`)
	for i, want := range []float64{1, 2, 3} {
		r := c.line()
		if r["id"] != want {
			t.Fatalf("reply %d: %v", i, r)
		}
	}
	// One command a byte at a time.
	msg := `{"execute": "query-version", "id": "split"}`
	for i := range len(msg) {
		c.send(msg[i : i+1])
		time.Sleep(time.Millisecond)
	}
	if r := c.line(); r["id"] != "split" || r["return"] == nil {
		t.Fatalf("split command: %v", r)
	}
}

type fakeMachine struct {
	mu     sync.Mutex
	paused bool
	quit   int
}

func (m *fakeMachine) Pause() error         { m.mu.Lock(); m.paused = true; m.mu.Unlock(); return nil }
func (m *fakeMachine) Resume() error        { m.mu.Lock(); m.paused = false; m.mu.Unlock(); return nil }
func (m *fakeMachine) Quit()                { m.mu.Lock(); m.quit++; m.mu.Unlock() }
func (m *fakeMachine) VCPUThreadIDs() []int { return []int{101, 102} }

func (m *fakeMachine) state() (paused bool, quit int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.paused, m.quit
}

func TestMachineCommands(t *testing.T) {
	s := newServer(t, Options{})
	m := &fakeMachine{}
	st := RegisterMachine(s, m)
	RegisterPlaceholders(s)
	c := negotiated(t, s.Path())
	other := negotiated(t, s.Path())

	status := func() map[string]any {
		r := c.cmd(`{"execute":"query-status"}`)
		ret, _ := r["return"].(map[string]any)
		return ret
	}
	if r := status(); r["status"] != "running" || r["running"] != true || r["singlestep"] != false {
		t.Errorf("query-status: %v", r)
	}
	// stop: STOP event first, then the reply; other clients get the event.
	c.send(`{"execute":"stop"}`)
	ev := c.line()
	if ev["event"] != "STOP" {
		t.Fatalf("want STOP first, got %v", ev)
	}
	ts, _ := ev["timestamp"].(map[string]any)
	if sec, _ := ts["seconds"].(float64); sec < float64(time.Now().Unix()-60) {
		t.Errorf("timestamp %v", ev["timestamp"])
	}
	if _, ok := ts["microseconds"].(float64); !ok {
		t.Errorf("timestamp %v", ev["timestamp"])
	}
	if r := c.line(); r["return"] == nil {
		t.Fatalf("stop reply %v", r)
	}
	if e := other.line(); e["event"] != "STOP" {
		t.Errorf("other client got %v", e)
	}
	if p, _ := m.state(); !p {
		t.Error("machine not paused")
	}
	if r := status(); r["status"] != "paused" || r["running"] != false {
		t.Errorf("query-status paused: %v", r)
	}
	// stop again: no event, just the reply.
	if r := c.cmd(`{"execute":"stop"}`); r["return"] == nil {
		t.Errorf("second stop: %v", r)
	}
	c.send(`{"execute":"cont"}`)
	if e := c.line(); e["event"] != "RESUME" {
		t.Fatalf("want RESUME, got %v", e)
	}
	if r := c.line(); r["return"] == nil {
		t.Fatalf("cont reply %v", r)
	}
	if p, _ := m.state(); p {
		t.Error("machine still paused")
	}
	other.line() // RESUME

	r := c.cmd(`{"execute":"query-cpus"}`)
	cpus, _ := r["return"].([]any)
	if len(cpus) != 2 {
		t.Fatalf("query-cpus: %v", r)
	}
	cpu1 := cpus[1].(map[string]any)
	if cpu1["CPU"] != 1.0 || cpu1["thread_id"] != 102.0 || cpu1["qom_path"] != "/machine/unattached/device[1]" || cpu1["arch"] != "x86" {
		t.Errorf("query-cpus[1]: %v", cpu1)
	}
	r = c.cmd(`{"execute":"query-hotpluggable-cpus"}`)
	hp, _ := r["return"].([]any)
	if len(hp) != 2 || hp[0].(map[string]any)["type"] != "host-x86-cpu" || hp[0].(map[string]any)["vcpus-count"] != 1.0 {
		t.Errorf("query-hotpluggable-cpus: %v", r)
	}
	if cl, d := errClass(c.cmd(`{"execute":"balloon","arguments":{"value":1}}`)); cl != ClassDeviceNotActive || d != "No balloon device has been activated" {
		t.Errorf("balloon: %s %s", cl, d)
	}
	if cl, d := errClass(c.cmd(`{"execute":"device_add","arguments":{"id":"x","driver":"virtio-blk-mmio"}}`)); cl != ClassGeneric || !strings.Contains(d, "device_add is not supported yet") {
		t.Errorf("device_add: %s %s", cl, d)
	}
	if cl, _ := errClass(c.cmd(`{"execute":"cont","arguments":{"x":1}}`)); cl != ClassGeneric {
		t.Errorf("cont with argument accepted")
	}
	r = c.cmd(`{"execute":"query-commands"}`)
	if cmds, _ := r["return"].([]any); len(cmds) < 15 {
		t.Errorf("query-commands: %v", r)
	}

	// quit: the reply, then SHUTDOWN once the VMM reports it.
	if r := c.cmd(`{"execute":"quit"}`); r["return"] == nil {
		t.Fatalf("quit: %v", r)
	}
	if _, q := m.state(); q != 1 {
		t.Fatalf("quit calls %d", q)
	}
	st.Shutdown(false, ReasonHostQMPQuit)
	st.Shutdown(false, ReasonHostQMPQuit) // only one event
	e := c.line()
	if d, _ := e["data"].(map[string]any); e["event"] != "SHUTDOWN" || d["guest"] != false || d["reason"] != "host-qmp-quit" {
		t.Errorf("SHUTDOWN: %v", e)
	}
	if cl, _ := errClass(c.cmd(`{"execute":"cont"}`)); cl != ClassGeneric {
		t.Error("cont after shutdown accepted")
	}
	if r := status(); r["status"] != "shutdown" {
		t.Errorf("status after shutdown: %v", r)
	}
}

func TestMaxClients(t *testing.T) {
	s := newServer(t, Options{MaxClients: 1})
	a := dial(t, s.Path())
	a.line()
	b := dial(t, s.Path())
	if cl, d := errClass(b.line()); cl != ClassGeneric || !strings.Contains(d, "too many QMP clients") {
		t.Errorf("second client: %s %s", cl, d)
	}
	a.c.Close()
	// The slot frees once the first client is gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial(t, s.Path())
		if _, ok := c.line()["QMP"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot never freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGetFD(t *testing.T) {
	s := newServer(t, Options{})
	c := negotiated(t, s.Path())
	if cl, d := errClass(c.cmd(`{"execute":"getfd","arguments":{"fdname":"tap"}}`)); cl != ClassGeneric || d != "No file descriptor supplied via SCM_RIGHTS" {
		t.Errorf("getfd without fd: %s %s", cl, d)
	}
	if cl, _ := errClass(c.cmd(`{"execute":"getfd","arguments":{}}`)); cl != ClassGeneric {
		t.Error("getfd without name accepted")
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	if _, _, err := c.c.WriteMsgUnix([]byte(`{"execute":"getfd","arguments":{"fdname":"pipe"}}`), unix.UnixRights(p[1]), nil); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	if r := c.line(); r["return"] == nil {
		t.Fatalf("getfd: %v", r)
	}
	fd, ok := s.TakeFD("pipe")
	if !ok {
		t.Fatal("fd not stored")
	}
	if _, err := unix.Write(fd, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	buf := make([]byte, 8)
	if n, _ := unix.Read(p[0], buf); string(buf[:n]) != "hi" {
		t.Errorf("stored fd is not the pipe: read %q", buf[:n])
	}
	if _, ok := s.TakeFD("pipe"); ok {
		t.Error("fd taken twice")
	}
	// closefd on a stored name, then on a missing one.
	var q [2]int
	if err := unix.Pipe2(q[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(q[0])
	c.c.WriteMsgUnix([]byte(`{"execute":"getfd","arguments":{"fdname":"q"}}`), unix.UnixRights(q[1]), nil)
	unix.Close(q[1])
	c.line()
	if r := c.cmd(`{"execute":"closefd","arguments":{"fdname":"q"}}`); r["return"] == nil {
		t.Errorf("closefd: %v", r)
	}
	// The write end is closed everywhere now: the read end sees EOF.
	if n, err := unix.Read(q[0], buf); n != 0 || err != nil {
		t.Errorf("read after closefd: %d %v", n, err)
	}
	if cl, _ := errClass(c.cmd(`{"execute":"closefd","arguments":{"fdname":"q"}}`)); cl != ClassGeneric {
		t.Error("closefd of a missing name accepted")
	}
}
