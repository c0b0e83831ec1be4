package container

import (
	"testing"
)

func TestGuestCounters(t *testing.T) {
	const interrupts0 = `           CPU0       CPU1       
  0:         12          3   IO-APIC   2-edge      timer
  4:        345          0   IO-APIC   4-edge      ttyS0
  5:         30          4   IO-APIC   5-edge      virtio0
NMI:          0          0   Non-maskable interrupts
LOC:       1000        200   Local timer interrupts
ERR:          0
garbage line
 12:      oops
`
	const interrupts1 = `           CPU0       CPU1       
  0:         12          3   IO-APIC   2-edge      timer
  4:        345          0   IO-APIC   4-edge      ttyS0
  5:         60          4   IO-APIC   5-edge      virtio0
NMI:          0          0   Non-maskable interrupts
LOC:       1100        220   Local timer interrupts
ERR:          1
`
	const vmstat0 = "nr_free_pages 1000\npgalloc_dma 5\npgalloc_dma32 100\npgfree 90\npgfault 700\npgmajfault 2\nbroken\npgsteal x\n"
	const vmstat1 = "nr_free_pages 900\npgalloc_dma 5\npgalloc_dma32 150\npgfree 91\npgfault 900\npgmajfault 2\n"

	const meminfo0 = "MemTotal:         238000 kB\nSlab:               9000 kB\nVmallocUsed:        2000 kB\nPercpu:              400 kB\nPercpu: x kB\nHugePages_Total:       0\n"
	const meminfo1 = "MemTotal:         238000 kB\nSlab:               9600 kB\nVmallocUsed:        6256 kB\nPercpu:              412 kB\n"

	a, b := guestCounters{}, guestCounters{}
	a.addInterrupts([]byte(interrupts0))
	a.addVMStat([]byte(vmstat0))
	a.addMeminfo([]byte(meminfo0))
	b.addInterrupts([]byte(interrupts1))
	b.addVMStat([]byte(vmstat1))
	b.addMeminfo([]byte(meminfo1))

	for name, want := range map[string]uint64{
		"irq 0 timer": 15, "irq 4 ttyS0": 345, "irq 5 virtio0": 34, "NMI": 0, "LOC": 1200, "ERR": 0,
		"pgalloc": 105, "pgfree": 90, "pgfault": 700, "pgmajfault": 2,
		"Slab kB": 9000, "VmallocUsed kB": 2000, "Percpu kB": 400,
	} {
		if got, ok := a[name]; !ok || got != want {
			t.Errorf("%s = %d (present %v), want %d", name, got, ok, want)
		}
	}
	if _, ok := a["irq 12"]; ok {
		t.Errorf("a row without counts was kept: %v", a)
	}
	if _, ok := a["nr_free_pages"]; ok {
		t.Errorf("a vmstat line outside the kept keys was kept: %v", a)
	}
	if _, ok := a["MemTotal kB"]; ok {
		t.Errorf("a meminfo line outside the kept keys was kept: %v", a)
	}
	if got, want := a.diff(b), "VmallocUsed kB +4256, Slab kB +600, pgfault +200, LOC +120, pgalloc +50, irq 5 virtio0 +30, Percpu kB +12, ERR +1, pgfree +1"; got != want {
		t.Errorf("diff = %q, want %q", got, want)
	}
	if got := b.diff(a); got != "nothing" {
		t.Errorf("diff backwards = %q, want nothing", got)
	}
}
