package amd64

import (
	"math/bits"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// CPUID leaves touched by ShapeCPUID.
const (
	cpuidVendor   = 0x0
	cpuidFeatures = 0x1
	// Guests get no nested virtualization: VMX (leaf 1) and SVM (leaf
	// 0x80000001, details in 0x8000000A) are hidden. A container guest
	// has no use for a hypervisor of its own, and it keeps the attack
	// surface of nested virtualization out of reach.
	cpuidExtFeatures = 0x80000001
	cpuidSVMFeatures = 0x8000000a
	extECXSVM        = 1 << 2
	leaf1ECXVMX      = 1 << 5
	cpuidCacheParams = 0x4
	cpuidPMU         = 0xa
	cpuidTopology    = 0xb
	cpuidTopologyV2  = 0x1f
	cpuidKVMSig      = 0x40000000
	cpuidAMDAddrSize = 0x80000008
	cpuidAMDTopology = 0x8000001e
)

// Leaf 1 bits.
const (
	leaf1ECXPDCM        = 1 << 15
	leaf1ECXTSCDeadline = 1 << 24
	leaf1ECXHypervisor  = 1 << 31
	leaf1EDXHTT         = 1 << 28
	clflushLineSize8B   = 8 // in 8-byte units: 64 bytes
)

// Topology level types in leaf 0xB/0x1F ECX[15:8].
const (
	topoLevelInvalid = 0
	topoLevelSMT     = 1
	topoLevelCore    = 2
)

// MaxVCPUs is the largest vCPU count the platform describes: APIC ids are
// 8 bits, 0xff is broadcast and the MP table gives the IOAPIC id count+1.
const MaxVCPUs = 254

// Vendor identifies the CPU vendor from leaf 0.
type Vendor int

// CPU vendors.
const (
	VendorOther Vendor = iota
	VendorIntel
	VendorAMD
)

// CPUIDVendor returns the vendor encoded in leaf 0 of entries.
func CPUIDVendor(entries []kvm.CPUIDEntry) Vendor {
	for _, e := range entries {
		if e.Function != cpuidVendor {
			continue
		}
		switch {
		case e.EBX == 0x756e6547 && e.EDX == 0x49656e69 && e.ECX == 0x6c65746e: // GenuineIntel
			return VendorIntel
		case e.EBX == 0x68747541 && e.EDX == 0x69746e65 && e.ECX == 0x444d4163, // AuthenticAMD
			e.EBX == 0x6f677948 && e.EDX == 0x6e65476e && e.ECX == 0x656e6975: // HygonGenuine
			return VendorAMD
		}
		return VendorOther
	}
	return VendorOther
}

// topology is the guest CPU topology: one socket, vcpuCount cores, one
// thread per core, APIC id == vCPU index.
type topology struct {
	index, count uint32
	coreShift    uint32 // bits of APIC id below the package id
}

func newTopology(vcpuIndex, vcpuCount int) topology {
	count := uint32(max(1, min(vcpuCount, MaxVCPUs)))
	index := uint32(max(0, min(vcpuIndex, int(count)-1)))
	return topology{index: index, count: count, coreShift: ceilLog2(count)}
}

// ceilLog2 returns the smallest s with 1<<s >= n (n >= 1).
func ceilLog2(n uint32) uint32 {
	if n <= 1 {
		return 0
	}
	return uint32(bits.Len32(n - 1))
}

// ShapeCPUID returns a copy of the KVM-supported CPUID entries adjusted for
// vCPU vcpuIndex of vcpuCount, so the guest sees exactly vcpuCount CPUs
// with APIC ids 0..vcpuCount-1 in one package (one thread per core). The
// input slice is not modified. vcpuCount is clamped to [1, MaxVCPUs] and
// vcpuIndex to [0, vcpuCount); callers validate both beforehand.
//
// Changes: leaf 1 (APIC id, logical count, CLFLUSH, hypervisor and
// TSC-deadline bits, HTT, no PDCM); leaves 0xB and 0x1F (x2APIC id, level
// shifts and counts; subleaf 1 added to 0xB when missing); Intel leaf 4
// core and cache-sharing counts; leaf 0xA (PMU) zeroed; AMD 0x80000008
// core count and 0x8000001E ids. Everything else, including the vendor
// and the KVM signature leaf, passes through.
func ShapeCPUID(supported []kvm.CPUIDEntry, vcpuIndex, vcpuCount int) []kvm.CPUIDEntry {
	t := newTopology(vcpuIndex, vcpuCount)
	vendor := CPUIDVendor(supported)
	out := make([]kvm.CPUIDEntry, 0, len(supported)+2)
	// Leaves 0xB and 0x1F must both describe the core level: KVM stopped
	// reporting subleaf 1 in late 2022, so add it when the leaf exists.
	present := map[uint32]bool{}
	haveSub1 := map[uint32]bool{}
	for _, e := range supported {
		switch e.Function {
		case cpuidFeatures:
			shapeLeaf1(&e, t)
		case cpuidCacheParams:
			if vendor == VendorIntel {
				shapeLeaf4(&e, t)
			}
		case cpuidPMU, cpuidSVMFeatures:
			e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0
		case cpuidExtFeatures:
			e.ECX &^= extECXSVM
		case cpuidTopology, cpuidTopologyV2:
			present[e.Function] = true
			if e.Index == 1 {
				haveSub1[e.Function] = true
			}
			shapeTopologyLeaf(&e, t)
		case cpuidAMDAddrSize:
			if vendor == VendorAMD {
				// NC: cores per package - 1; ApicIdCoreIdSize: id bits.
				e.ECX = e.ECX&^0xf0ff | (t.coreShift&0xf)<<12 | (t.count-1)&0xff
			}
		case cpuidAMDTopology:
			if vendor == VendorAMD {
				e.EAX = t.index                 // extended APIC id
				e.EBX = e.EBX&^0xffff | t.index // core id, 1 thread per core
				e.ECX = e.ECX &^ 0x7ff          // node 0, 1 node per package
				e.EDX = 0
			}
		}
		out = append(out, e)
	}
	for _, fn := range []uint32{cpuidTopology, cpuidTopologyV2} {
		if present[fn] && !haveSub1[fn] {
			e := kvm.CPUIDEntry{Function: fn, Index: 1, Flags: kvm.CPUIDFlagSignificantIndex}
			shapeTopologyLeaf(&e, t)
			out = append(out, e)
		}
	}
	return out
}

func shapeLeaf1(e *kvm.CPUIDEntry, t topology) {
	// Next power of two >= count, saturated to the 8-bit field (256 -> 255).
	logical := min(uint32(1)<<t.coreShift, 0xff)
	e.EBX = e.EBX&0xff | (clflushLineSize8B << 8) | (logical&0xff)<<16 | (t.index&0xff)<<24
	e.ECX = e.ECX&^(leaf1ECXPDCM|leaf1ECXVMX) | leaf1ECXTSCDeadline | leaf1ECXHypervisor
	if t.count > 1 {
		e.EDX |= leaf1EDXHTT
	} else {
		e.EDX &^= leaf1EDXHTT
	}
}

// shapeLeaf4 sets EAX[31:26] (addressable core ids - 1) and EAX[25:14]
// (logical CPUs sharing the cache - 1): 1 for L1/L2, the package for L3+.
func shapeLeaf4(e *kvm.CPUIDEntry, t topology) {
	if e.EAX&0x1f == 0 { // no more caches
		return
	}
	cores := min(uint32(1)<<t.coreShift, 64) - 1
	sharing := uint32(0)
	if level := (e.EAX >> 5) & 7; level >= 3 {
		sharing = min(uint32(1)<<t.coreShift, 4096) - 1
	}
	e.EAX = e.EAX&0x3fff | sharing<<14 | cores<<26
}

// shapeTopologyLeaf shapes one subleaf of 0xB or 0x1F: subleaf 0 is the
// SMT level (1 thread), subleaf 1 the core level (all vCPUs), higher
// subleaves are terminators. EDX is always the x2APIC id.
func shapeTopologyLeaf(e *kvm.CPUIDEntry, t topology) {
	sub := e.Index & 0xff
	switch sub {
	case 0:
		e.EAX, e.EBX, e.ECX = 0, 1, topoLevelSMT<<8|sub
	case 1:
		e.EAX, e.EBX, e.ECX = t.coreShift, t.count, topoLevelCore<<8|sub
	default:
		e.EAX, e.EBX, e.ECX = 0, 0, topoLevelInvalid<<8|sub
	}
	e.EDX = t.index
}
