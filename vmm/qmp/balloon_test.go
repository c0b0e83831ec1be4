package qmp

import (
	"testing"
)

type fakeBalloon struct{ ram, target uint64 }

func (b *fakeBalloon) SetBalloonTarget(v uint64) error { b.target = min(v, b.ram); return nil }
func (b *fakeBalloon) BalloonActual() (uint64, error)  { return b.target, nil }

func TestBalloonCommands(t *testing.T) {
	s := newServer(t, Options{})
	RegisterPlaceholders(s)
	b := &fakeBalloon{ram: 1 << 30, target: 1 << 30}
	RegisterBalloon(s, b)
	c := negotiated(t, s.Path())
	if r := c.cmd(`{"execute":"query-balloon"}`); r["return"].(map[string]any)["actual"] != float64(1<<30) {
		t.Fatalf("query-balloon: %v", r)
	}
	c.send(`{"execute":"balloon","arguments":{"value":536870912}}`)
	var gotReply, gotEvent bool
	for range 2 {
		m := c.line()
		if _, ok := m["return"]; ok {
			gotReply = true
		}
		if m["event"] == "BALLOON_CHANGED" && m["data"].(map[string]any)["actual"] == float64(512<<20) {
			gotEvent = true
		}
	}
	if !gotReply || !gotEvent || b.target != 512<<20 {
		t.Errorf("balloon: reply %v event %v target %d", gotReply, gotEvent, b.target)
	}
	if cl, _ := errClass(c.cmd(`{"execute":"balloon","arguments":{}}`)); cl != ClassGeneric {
		t.Errorf("balloon without value: %s", cl)
	}
}
