package qmp

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzInput feeds arbitrary client bytes, cut into chunks at arbitrary
// points, through the splitter and the command dispatcher. It must never
// panic; every reply must be valid JSON with exactly one of return and
// error; the values found must not depend on how the input was chunked;
// and the buffer never exceeds the limit.
func FuzzInput(f *testing.F) {
	f.Add([]byte(`{"execute":"qmp_capabilities"}{"execute":"query-status","id":1}`), uint8(3))
	f.Add([]byte(`{"execute":"x\"}{","arguments":{"a":[1,{"b":"]"}]}}`+"\n garbage {"), uint8(1))
	f.Add([]byte(`[[[[[[[[[[]]]]]]]]]]}}}}{"id":{}`), uint8(7))
	f.Add([]byte(`{"execute":"getfd","arguments":{"fdname":"a"}}`), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		const max = 256
		whole := newSplitter(max).feed(data)
		s := newSplitter(max)
		var parts []item
		step := int(chunk)%17 + 1
		for i := 0; i < len(data); i += step {
			end := min(i+step, len(data))
			parts = append(parts, s.feed(data[i:end])...)
			if s.pending() > max {
				t.Fatalf("buffer %d bytes > %d", s.pending(), max)
			}
		}
		if len(parts) != len(whole) {
			t.Fatalf("%d items whole, %d chunked", len(whole), len(parts))
		}
		for i := range whole {
			if !bytes.Equal(whole[i].value, parts[i].value) || whole[i].err != parts[i].err {
				t.Fatalf("item %d differs: %q/%q vs %q/%q", i, whole[i].value, whole[i].err, parts[i].value, parts[i].err)
			}
		}
		srv := &Server{handlers: map[string]Handler{}, opts: Options{MaxMessage: max}}
		m := &fakeMachine{}
		RegisterMachine(srv, m)
		RegisterPlaceholders(srv)
		srv.Handle("getfd", srv.getfd)
		srv.Handle("closefd", srv.closefd)
		srv.fds = map[string]int{}
		c := &conn{s: srv}
		for _, it := range whole {
			if it.err != "" {
				continue
			}
			reply := srv.execute(c, it.value)
			b, err := json.Marshal(reply)
			if err != nil {
				t.Fatalf("reply not encodable: %v", err)
			}
			_, hasRet := reply["return"]
			_, hasErr := reply["error"]
			if hasRet == hasErr {
				t.Fatalf("reply %s has neither or both of return and error", b)
			}
		}
	})
}
