// Package qmp owns the VMM's api-channel: a QMP (QEMU Machine Protocol)
// server on a unix stream socket, its command table and its events.
//
// Protocol: on connect the server sends the greeting; the client must
// send qmp_capabilities before anything else (QEMU's negotiation); then
// each command {"execute":NAME[,"arguments":{…}][,"id":ANY]} gets one
// reply, {"return":…} or {"error":{"class":…,"desc":…}}, carrying the id
// when one was given. Events {"event":NAME,"data":…,"timestamp":
// {"seconds":S,"microseconds":U}} go to every negotiated client and are
// not queued for later clients. Input is a byte stream: several commands
// in one read and commands split across reads both work; a command
// longer than Options.MaxMessage is answered with an error and skipped;
// malformed JSON gets a GenericError; nothing a client sends can stop
// the server.
//
// Clients: up to Options.MaxClients (default 8) at once, each with its
// own negotiation; a further client is greeted with an error and closed.
// Commands from all clients are executed one at a time, in arrival order
// per client, so handlers need no locking against each other. File
// descriptors passed with SCM_RIGHTS are kept per connection until a
// getfd names them; named fds belong to the server (any client may use
// or close them) and are closed by Close.
//
// Device code adds commands with Handle (blockdev-add, device_add, …);
// until then RegisterPlaceholders answers them with an error.
//
// Goroutines: one accept loop, one reader per client. Lock order:
// Server.cmdMu (command execution) before Server.mu (handler table,
// clients, fds) before conn.wmu (writes to one client).
package qmp

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/lograte"
)

// Error classes used in replies (QEMU's names).
const (
	ClassGeneric          = "GenericError"
	ClassCommandNotFound  = "CommandNotFound"
	ClassDeviceNotActive  = "DeviceNotActive"
	ClassDeviceNotFound   = "DeviceNotFound"
	ClassKVMMissingCap    = "KVMMissingCap"
	ClassOperationThrottl = "OperationThrottled"
)

// Error is a QMP error reply. Handlers return it to choose the class; any
// other error is sent as a GenericError with the error's text.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Errorf returns an *Error of class with a formatted description.
func Errorf(class, format string, args ...any) *Error {
	return &Error{Class: class, Desc: fmt.Sprintf(format, args...)}
}

// Request is one command as a handler sees it.
type Request struct {
	// Command is the "execute" name.
	Command string
	// Args is the "arguments" object ("{}" when absent).
	Args json.RawMessage

	conn *conn
}

// Decode unmarshals the arguments into v (a pointer to a struct with
// JSON tags), rejecting unknown members as QEMU does.
func (r *Request) Decode(v any) error { return decodeArgs(r.Args, v) }

// TakeFD removes and returns the most recent descriptor the client sent
// with SCM_RIGHTS and not yet consumed; the caller then owns it.
func (r *Request) TakeFD() (int, bool) {
	if r.conn == nil {
		return -1, false
	}
	return r.conn.takeFD()
}

// Handler executes one command. It returns the value for "return" (nil
// means {}) or an error.
type Handler func(r *Request) (any, error)

// Options configure a Server.
type Options struct {
	// Package is the greeting's version.package ("StratoVirt-<version>").
	Package string
	// MaxMessage bounds one command's size in bytes (default 64 KiB).
	MaxMessage int
	// MaxClients bounds simultaneous clients (default 8).
	MaxClients int
	// WriteTimeout bounds one write to a client that does not read
	// (default 5 s); the client is then disconnected.
	WriteTimeout time.Duration
}

// Limits and defaults.
const (
	DefaultMaxMessage = 64 << 10
	DefaultMaxClients = 8
	maxPendingFDs     = 16
	maxNamedFDs       = 64
)

// Server is a QMP server on one unix socket.
type Server struct {
	opts Options
	path string
	ln   *listener

	cmdMu sync.Mutex // serializes command execution

	mu       sync.Mutex
	handlers map[string]Handler
	conns    map[*conn]bool
	fds      map[string]int
	closed   bool
	wg       sync.WaitGroup
}

// Listen creates the socket at path (mode 0600) and returns a server with
// the built-in commands (qmp_capabilities, query-commands, query-version,
// getfd, closefd). The path must not exist. Serve starts answering.
func Listen(path string, opts Options) (*Server, error) {
	if opts.MaxMessage <= 0 {
		opts.MaxMessage = DefaultMaxMessage
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = DefaultMaxClients
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("api-channel socket %q already exists", path)
	}
	ln, err := listenUnix(path)
	if err != nil {
		return nil, fmt.Errorf("bind api-channel socket %q: %w", path, err)
	}
	s := &Server{
		opts: opts, path: path, ln: ln,
		handlers: make(map[string]Handler),
		conns:    make(map[*conn]bool),
		fds:      make(map[string]int),
	}
	s.Handle("query-commands", s.queryCommands)
	s.Handle("query-version", s.queryVersion)
	s.Handle("getfd", s.getfd)
	s.Handle("closefd", s.closefd)
	return s, nil
}

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// Handle registers (or replaces) the handler for command name.
func (s *Server) Handle(name string, h Handler) {
	s.mu.Lock()
	s.handlers[name] = h
	s.mu.Unlock()
}

// Serve accepts clients in a new goroutine and returns at once.
func (s *Server) Serve() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.acceptLoop()
	}()
}

func (s *Server) acceptLoop() {
	warns := lograte.Limiter{Every: time.Minute}
	for {
		uc, err := s.ln.accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, os.ErrClosed) {
				return
			}
			// Out of descriptors, say: retry.
			warns.Warn(fmt.Sprintf("qmp: accept: %v; retrying", err))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c := newConn(s, uc)
		s.mu.Lock()
		full := len(s.conns) >= s.opts.MaxClients
		closed := s.closed
		if !full && !closed {
			s.conns[c] = true
		}
		s.mu.Unlock()
		if closed {
			uc.f.Close()
			return
		}
		if full {
			c.write(map[string]any{"error": Errorf(ClassGeneric, "too many QMP clients (at most %d)", s.opts.MaxClients)})
			uc.f.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Event sends an event to every negotiated client. data nil means {}.
func (s *Server) Event(name string, data any) {
	if data == nil {
		data = struct{}{}
	}
	now := time.Now()
	ev := map[string]any{
		"event":     name,
		"data":      data,
		"timestamp": map[string]int64{"seconds": now.Unix(), "microseconds": int64(now.Nanosecond() / 1000)},
	}
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		if c.isNegotiated() {
			c.write(ev)
		}
	}
}

// TakeFD removes the descriptor stored by getfd under name and returns
// it; the caller then owns it.
func (s *Server) TakeFD(name string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fd, ok := s.fds[name]
	if ok {
		delete(s.fds, name)
	}
	return fd, ok
}

// Close stops accepting, disconnects every client, closes the stored
// descriptors and removes the socket file. It waits for the server's
// goroutines, so it must not be called from a handler.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	s.fds = nil
	s.mu.Unlock()
	err := s.ln.close()
	for _, c := range conns {
		c.uc.f.Close()
	}
	s.wg.Wait()
	if _, serr := os.Lstat(s.path); serr == nil {
		if rerr := os.Remove(s.path); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// execute runs one command from c and returns the reply object.
func (s *Server) execute(c *conn, raw []byte) map[string]any {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msg); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return errorReply(nil, Errorf(ClassGeneric, "QMP input must be a JSON object"))
		}
		return errorReply(nil, Errorf(ClassGeneric, "JSON parse error, %v", err))
	}
	id := msg["id"]
	var name string
	args := json.RawMessage("{}")
	for k, v := range msg {
		switch k {
		case "id":
		case "execute":
			if err := json.Unmarshal(v, &name); err != nil {
				return errorReply(id, Errorf(ClassGeneric, "QMP input member 'execute' must be a string"))
			}
		case "arguments":
			if len(v) == 0 || v[0] != '{' {
				return errorReply(id, Errorf(ClassGeneric, "QMP input member 'arguments' must be an object"))
			}
			args = v
		default:
			return errorReply(id, Errorf(ClassGeneric, "QMP input member '%s' is unexpected", k))
		}
	}
	if _, ok := msg["execute"]; !ok {
		return errorReply(id, Errorf(ClassGeneric, "QMP input lacks member 'execute'"))
	}

	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	if !c.isNegotiated() {
		if name != "qmp_capabilities" {
			return errorReply(id, Errorf(ClassCommandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'"))
		}
		var caps struct {
			Enable []string `json:"enable"`
		}
		if err := decodeArgs(args, &caps); err != nil {
			return errorReply(id, err)
		}
		if len(caps.Enable) > 0 {
			return errorReply(id, Errorf(ClassGeneric, "Capability '%s' not available", caps.Enable[0]))
		}
		c.setNegotiated()
		return okReply(id, struct{}{})
	}
	if name == "qmp_capabilities" {
		return errorReply(id, Errorf(ClassCommandNotFound, "Capabilities negotiation is already complete, command ignored"))
	}
	s.mu.Lock()
	h := s.handlers[name]
	s.mu.Unlock()
	if h == nil {
		return errorReply(id, Errorf(ClassCommandNotFound, "The command %s has not been found", name))
	}
	res, err := h(&Request{Command: name, Args: args, conn: c})
	if err != nil {
		return errorReply(id, err)
	}
	if res == nil {
		res = struct{}{}
	}
	return okReply(id, res)
}

func okReply(id json.RawMessage, res any) map[string]any {
	r := map[string]any{"return": res}
	if id != nil {
		r["id"] = id
	}
	return r
}

func errorReply(id json.RawMessage, err error) map[string]any {
	var qe *Error
	if !errors.As(err, &qe) {
		qe = &Error{Class: ClassGeneric, Desc: err.Error()}
	}
	r := map[string]any{"error": qe}
	if id != nil {
		r["id"] = id
	}
	return r
}

// decodeArgs unmarshals a command's arguments strictly.
func decodeArgs(raw json.RawMessage, v any) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return Errorf(ClassGeneric, "QMP input member 'arguments' must be an object")
	}
	known := fieldNames(v)
	for k := range members {
		if !known[k] {
			return Errorf(ClassGeneric, "Parameter '%s' is unexpected", k)
		}
	}
	if err := json.Unmarshal(raw, v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return Errorf(ClassGeneric, "Invalid parameter type for '%s', expected: %s", ute.Field, ute.Type.Kind())
		}
		return Errorf(ClassGeneric, "invalid arguments: %v", err)
	}
	return nil
}

// --- built-in commands ---

func (s *Server) queryCommands(*Request) (any, error) {
	s.mu.Lock()
	names := make([]string, 0, len(s.handlers)+1)
	for n := range s.handlers {
		names = append(names, n)
	}
	s.mu.Unlock()
	names = append(names, "qmp_capabilities")
	sort.Strings(names)
	out := make([]map[string]string, len(names))
	for i, n := range names {
		out[i] = map[string]string{"name": n}
	}
	return out, nil
}

func (s *Server) queryVersion(*Request) (any, error) {
	return greetingVersion(s.opts.Package), nil
}

func (s *Server) getfd(r *Request) (any, error) {
	var a struct {
		FDName string `json:"fdname"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.FDName == "" {
		return nil, Errorf(ClassGeneric, "Parameter 'fdname' is missing")
	}
	if a.FDName[0] >= '0' && a.FDName[0] <= '9' {
		return nil, Errorf(ClassGeneric, "Parameter 'fdname' expects a name not starting with a digit")
	}
	fd, ok := r.TakeFD()
	if !ok {
		return nil, Errorf(ClassGeneric, "No file descriptor supplied via SCM_RIGHTS")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		unix.Close(fd)
		return nil, Errorf(ClassGeneric, "server is closing")
	}
	if old, ok := s.fds[a.FDName]; ok {
		unix.Close(old)
	} else if len(s.fds) >= maxNamedFDs {
		unix.Close(fd)
		return nil, Errorf(ClassGeneric, "too many named file descriptors (at most %d)", maxNamedFDs)
	}
	s.fds[a.FDName] = fd
	return nil, nil
}

func (s *Server) closefd(r *Request) (any, error) {
	var a struct {
		FDName string `json:"fdname"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	fd, ok := s.TakeFD(a.FDName)
	if !ok {
		return nil, Errorf(ClassGeneric, "File descriptor named '%s' not found", a.FDName)
	}
	unix.Close(fd)
	return nil, nil
}

// Greeting version: QEMU 5.0.1 (Kata's govmm refuses major < 5), as
// StratoVirt reports since 2021.
func greetingVersion(pkg string) map[string]any {
	return map[string]any{
		"qemu":    map[string]int{"major": 5, "minor": 0, "micro": 1},
		"package": pkg,
	}
}
