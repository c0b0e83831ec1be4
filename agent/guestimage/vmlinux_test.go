package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

func TestLZ4Block(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prev    string
		block   []byte
		want    string
		wantErr bool
	}{
		{"literals only", "", []byte{0x50, 'h', 'e', 'l', 'l', 'o'}, "hello", false},
		// "ab" then a match at offset 2 of 2+4 bytes: overlapping copy.
		{"overlapping match", "", []byte{0x22, 'a', 'b', 2, 0, 0x10, 'c'}, "ababababc", false},
		// 15+3 literals through the extended length byte.
		{"long literals", "", append([]byte{0xf0, 3}, []byte("0123456789abcdefgh")...), "0123456789abcdefgh", false},
		// A match reaching into the previous block's output.
		{"match into previous block", "xyz", []byte{0x00, 3, 0, 0x10, '!'}, "xyzxyzx!", false},
		{"offset beyond output", "", []byte{0x10, 'a', 5, 0, 0x00}, "", true},
		{"zero offset", "", []byte{0x10, 'a', 0, 0, 0x00}, "", true},
		{"truncated literals", "", []byte{0x50, 'h', 'e'}, "", true},
		{"truncated offset", "", []byte{0x10, 'a', 1}, "", true},
		{"truncated length", "", []byte{0xf0}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lz4Block([]byte(tc.prev), tc.block, 1<<20)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("decoded %q, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := lz4Block(nil, []byte{0x1f, 'a', 1, 0, 255, 255, 255, 10}, 100); err == nil {
		t.Fatal("output beyond the limit accepted")
	}
}

func TestVmlinuxSynthetic(t *testing.T) {
	// A bzImage-shaped buffer: setup header with HdrS, one setup sector,
	// the payload at offset 16 of the protected-mode part.
	elf := []byte("\x7fELF-kernel")
	block := append([]byte{byte(len(elf) << 4)}, elf...)
	payload := append(append([]byte{}, lz4Legacy...), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(payload[4:], uint32(len(block)))
	payload = append(payload, block...)
	payload = binary.LittleEndian.AppendUint32(payload, uint32(len(elf))) // Linux's trailing length
	bz := make([]byte, 2*512+16)
	bz[0x1f1] = 1
	binary.LittleEndian.PutUint32(bz[0x202:], 0x53726448)
	binary.LittleEndian.PutUint32(bz[0x248:], 16)
	binary.LittleEndian.PutUint32(bz[0x24c:], uint32(len(payload)))
	bz = append(bz, payload...)
	got, err := Vmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, elf) {
		t.Fatalf("got %q", got)
	}
	binary.LittleEndian.PutUint32(bz[0x24c:], uint32(len(payload)+1))
	if _, err := Vmlinux(bz); err == nil {
		t.Fatal("payload past the end accepted")
	}
	if _, err := Vmlinux(make([]byte, 0x300)); err == nil {
		t.Fatal("no setup header accepted")
	}
}

// TestVmlinuxCloudKernel checks the decoder against the lz4 tool's output
// (lab.Vmlinux) for the cached Debian cloud kernel.
func TestVmlinuxCloudKernel(t *testing.T) {
	k, err := lab.GuestKernel()
	if err != nil {
		t.Skip(err)
	}
	ref := filepath.Join(k.Dir, "vmlinux")
	want, err := os.ReadFile(ref)
	if err != nil {
		t.Skipf("no %s (make deps, lab.Vmlinux)", ref)
	}
	bz, err := os.ReadFile(k.Image)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Vmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("vmlinux differs from %s (%d vs %d bytes)", ref, len(got), len(want))
	}
}

func FuzzLZ4Legacy(f *testing.F) {
	f.Add([]byte{6, 0, 0, 0, 0x50, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{7, 0, 0, 0, 0x22, 'a', 'b', 2, 0, 0x10, 'c'})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := lz4LegacyDecode(b, 1<<20)
		if err == nil && len(out) > 1<<20 {
			t.Fatalf("%d bytes past the limit", len(out))
		}
	})
}
