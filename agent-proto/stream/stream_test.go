package stream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Kind: Stdin, ContainerID: "c1"},
		{Kind: Stdout, ContainerID: "abc-DEF_0.9", ExecID: "exec-1"},
		{Kind: Stderr, ContainerID: strings.Repeat("x", MaxIDLen), ExecID: strings.Repeat("y", MaxIDLen)},
		{Kind: Log},
	} {
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("%+v: %v", h, err)
		}
		got, n, err := ParseHeader(append(b, "trailing data"...))
		if err != nil || got != h || n != len(b) {
			t.Fatalf("ParseHeader(%q) = %+v, %d, %v; want %+v, %d", b, got, n, err, h, len(b))
		}
		r := bytes.NewReader(append(b, "data"...))
		got, err = ReadHeader(r)
		if err != nil || got != h {
			t.Fatalf("ReadHeader = %+v, %v", got, err)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "data" {
			t.Fatalf("ReadHeader consumed data: rest %q", rest)
		}
		for i := 0; i < len(b); i++ {
			if _, _, err := ParseHeader(b[:i]); !errors.Is(err, ErrShort) {
				t.Fatalf("prefix %d of %q: err %v, want ErrShort", i, b, err)
			}
		}
	}
}

func TestHeaderInvalid(t *testing.T) {
	for name, b := range map[string]string{
		"magic":         "XVS1\x01\x01c\x00",
		"magic prefix":  "SX",
		"kind":          "SVS1\x09\x01c\x00",
		"empty cid":     "SVS1\x01\x00\x00",
		"bad cid char":  "SVS1\x01\x02c/\x00",
		"dot cid":       "SVS1\x01\x02..\x00",
		"bad eid":       "SVS1\x01\x01c\x01 ",
		"cid too long":  "SVS1\x01\xffc",
		"eid too long":  "SVS1\x01\x01c\x81",
		"log with cid":  "SVS1\x03\x01c\x00",
		"log with eid":  "SVS1\x03\x00\x01e",
		"nul in cid":    "SVS1\x00\x02c\x00\x00",
		"space in cid":  "SVS1\x00\x02c \x00",
		"unicode in id": "SVS1\x00\x02\xc3\xa9\x00",
	} {
		if _, _, err := ParseHeader([]byte(b)); err == nil || errors.Is(err, ErrShort) {
			t.Errorf("%s: ParseHeader(%q) err = %v, want a hard error", name, b, err)
		}
		if _, err := ReadHeader(strings.NewReader(b)); err == nil {
			t.Errorf("%s: ReadHeader accepted %q", name, b)
		}
	}
	if _, err := (Header{Kind: Stdout}).MarshalBinary(); err == nil {
		t.Error("MarshalBinary accepted an empty container id")
	}
}

func TestReply(t *testing.T) {
	var b bytes.Buffer
	if err := WriteReply(&b, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteReply(&b, errors.New("no such process")); err != nil {
		t.Fatal(err)
	}
	if err := WriteReply(&b, errors.New(strings.Repeat("z", 5000))); err != nil {
		t.Fatal(err)
	}
	if err := ReadReply(&b); err != nil {
		t.Fatalf("accepted reply: %v", err)
	}
	err := ReadReply(&b)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "no such process") {
		t.Fatalf("refusal: %v", err)
	}
	err = ReadReply(&b)
	if !errors.Is(err, ErrRefused) || len(err.Error()) < MaxMessage || len(err.Error()) > MaxMessage+100 {
		t.Fatalf("long refusal: %d bytes", len(err.Error()))
	}
	for _, bad := range []string{"\x02\x00\x00", "\x00\x00\x01x", "\x01\xff\xff", "\x01\x00\x05ab", "\x01"} {
		if err := ReadReply(strings.NewReader(bad)); err == nil || errors.Is(err, ErrRefused) {
			t.Errorf("ReadReply(%q) = %v, want a malformed-reply error", bad, err)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, h := range []Header{{Kind: Stdout, ContainerID: "c", ExecID: "e"}, {Kind: Log}} {
		b, _ := h.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte("SVS1\x01\xffx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		rh, rerr := ReadHeader(bytes.NewReader(b))
		if err != nil {
			if rerr == nil {
				t.Fatalf("ReadHeader accepted %q that ParseHeader refused: %v", b, err)
			}
			return
		}
		if rerr != nil || rh != h {
			t.Fatalf("ReadHeader = %+v, %v; ParseHeader = %+v", rh, rerr, h)
		}
		if n > len(b) || n > MaxHeaderLen {
			t.Fatalf("length %d of %d", n, len(b))
		}
		enc, err := h.MarshalBinary()
		if err != nil || !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encode %+v = %q, %v; want %q", h, enc, err, b[:n])
		}
	})
}

func FuzzReadReply(f *testing.F) {
	f.Add([]byte{0, 0, 0})
	f.Add([]byte("\x01\x00\x03abc"))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := ReadReply(bytes.NewReader(b))
		if err == nil && (len(b) < 3 || b[0] != 0 || b[1] != 0 || b[2] != 0) {
			t.Fatalf("accepted %q", b)
		}
	})
}
