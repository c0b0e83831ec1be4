package acpi

import (
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// fuzzImage returns guest memory bytes holding an RSDP at 0 followed by
// the tables, trimmed to their end.
func fuzzImage(f *testing.F, cfg Config) []byte {
	tab, err := Build(cfg)
	if err != nil {
		f.Fatal(err)
	}
	buf := make([]byte, RSDPSize+8+tab.Size())
	mem, err := guestmem.FromBytes([]uint64{0}, [][]byte{buf})
	if err != nil {
		f.Fatal(err)
	}
	if err := tab.Write(mem, 0, RSDPSize, uint64(len(buf))); err != nil {
		f.Fatal(err)
	}
	return buf
}

// FuzzParse feeds arbitrary guest memory (RSDP at GPA 0) to the table
// parser, with and without checksum verification so that mutations reach
// the table decoders, and walks whatever DSDT it finds.
func FuzzParse(f *testing.F) {
	f.Add(fuzzImage(f, Config{VCPUs: 1}))
	f.Add(fuzzImage(f, Config{VCPUs: 4, MMIODevices: mmioDevices(3), IRQ0ToGSI2: true}))
	f.Add(fuzzImage(f, Config{VCPUs: 260, MMIODevices: mmioDevices(11)}))
	f.Add([]byte("RSD PTR "))
	f.Fuzz(func(t *testing.T, data []byte) {
		mem, err := guestmem.FromBytes([]uint64{0}, [][]byte{data})
		if err != nil {
			t.Fatal(err)
		}
		if p, err := Parse(mem, 0); err == nil && p.FADT == nil {
			t.Fatal("Parse succeeded without an FADT")
		}
		p, err := parse(mem, 0, false)
		if err != nil {
			return
		}
		nodes, err := DecodeAML(p.AML)
		if err != nil {
			return
		}
		var walk func(ns []Node)
		walk = func(ns []Node) {
			for _, n := range ns {
				if n.Op == "Buffer" {
					_, _ = DecodeResources(n.Bytes)
				}
				walk(n.Children)
			}
		}
		walk(nodes)
	})
}

// FuzzDecodeAML checks the AML and resource decoders never panic, and that
// what the encoder produces always decodes.
func FuzzDecodeAML(f *testing.F) {
	tab, err := Build(Config{VCPUs: 1, MMIODevices: mmioDevices(11)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tab.DSDT[headerSize:])
	f.Add([]byte{0x10, 0x06, 0x5C, '_', 'S', 'B', '_'})
	f.Fuzz(func(t *testing.T, data []byte) {
		nodes, err := DecodeAML(data)
		if err == nil {
			for _, n := range nodes {
				if n.Op == "" {
					t.Fatal("decoded node without an Op")
				}
			}
		}
		_, _ = DecodeResources(data)
	})
}
