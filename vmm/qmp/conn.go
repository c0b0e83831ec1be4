package qmp

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// conn is one client. Its reader goroutine owns split and executes
// commands; writes (replies and events from other goroutines) take wmu.
type conn struct {
	s     *Server
	uc    *sockConn
	split *splitter

	wmu        sync.Mutex
	negotiated bool // guarded by wmu
	dead       bool // guarded by wmu: a write failed

	fmu     sync.Mutex
	pending []int // SCM_RIGHTS descriptors not yet consumed, oldest first
}

func newConn(s *Server, uc *sockConn) *conn {
	return &conn{s: s, uc: uc, split: newSplitter(s.opts.MaxMessage)}
}

func (c *conn) isNegotiated() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.negotiated && !c.dead
}

func (c *conn) setNegotiated() {
	c.wmu.Lock()
	c.negotiated = true
	c.wmu.Unlock()
}

// write sends one JSON document followed by a newline. A client that
// does not read within the write timeout is disconnected.
func (c *conn) write(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		log.L.WithError(err).Error("qmp: marshal reply")
		return
	}
	b = append(b, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.dead {
		return
	}
	_ = c.uc.f.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
	if _, err := c.uc.f.Write(b); err != nil {
		c.dead = true
		log.L.WithError(err).Debug("qmp: client write failed, disconnecting")
		c.uc.f.Close()
	}
}

// serve greets the client and executes its commands until it hangs up.
func (c *conn) serve() {
	defer func() {
		c.uc.f.Close()
		c.fmu.Lock()
		for _, fd := range c.pending {
			unix.Close(fd)
		}
		c.pending = nil
		c.fmu.Unlock()
	}()
	c.write(map[string]any{"QMP": map[string]any{
		"version":      greetingVersion(c.s.opts.Package),
		"capabilities": []string{},
	}})
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(maxPendingFDs*4))
	for {
		n, oobn, flags, err := c.uc.recvmsg(buf, oob)
		if oobn > 0 {
			c.addFDs(oob[:oobn], flags&unix.MSG_CTRUNC != 0)
		}
		for _, it := range c.split.feed(buf[:n]) {
			if it.err != "" {
				c.write(errorReply(nil, Errorf(ClassGeneric, "%s", it.err)))
				continue
			}
			c.write(c.s.execute(c, it.value))
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				log.L.WithError(err).Debug("qmp: client read")
			}
			return
		}
	}
}

// addFDs keeps the descriptors of an SCM_RIGHTS message (the runtime
// sets MSG_CMSG_CLOEXEC), dropping the oldest beyond maxPendingFDs.
func (c *conn) addFDs(oob []byte, truncated bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		log.L.WithError(err).Debug("qmp: bad control message")
		return
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	if truncated {
		log.L.Warn("qmp: control message truncated, some descriptors were lost")
	}
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.pending = append(c.pending, fds...)
	for len(c.pending) > maxPendingFDs {
		unix.Close(c.pending[0])
		c.pending = c.pending[1:]
	}
}

// takeFD removes the newest pending descriptor; older ones are closed,
// since a getfd consumes exactly one (QEMU keeps the last one sent).
func (c *conn) takeFD() (int, bool) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	n := len(c.pending)
	if n == 0 {
		return -1, false
	}
	fd := c.pending[n-1]
	for _, old := range c.pending[:n-1] {
		unix.Close(old)
	}
	c.pending = c.pending[:0]
	return fd, true
}

// fieldNames returns the JSON names of the struct v points to.
func fieldNames(v any) map[string]bool {
	out := make(map[string]bool)
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}
