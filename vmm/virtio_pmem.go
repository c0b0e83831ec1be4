package vmm

import (
	"errors"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/arch/amd64"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/pmem"
)

// pmemSlot is a virtio-pmem device with the KVM memory slot that maps its
// region into the guest; closing it removes the slot before the device
// unmaps the region.
type pmemSlot struct {
	vm   *kvm.VM
	slot uint32
	gpa  uint64
	dev  *pmem.Pmem
}

func (p *pmemSlot) Close() error {
	return errors.Join(p.vm.SetUserMemoryRegion(p.slot, p.gpa, nil, 0), p.dev.Close())
}

// setupPmem attaches the virtio-pmem devices on the default event loop,
// their regions one after another from amd64.DeviceMemoryStart, each in a
// memory slot of its own after the RAM slots.
func (v *VM) setupPmem() error {
	gpa := amd64.DeviceMemoryStart(v.cfg.Machine.MemSize)
	for _, c := range v.cfg.Pmems {
		loop, err := v.eventLoop("")
		if err != nil {
			return err
		}
		dev, err := pmem.New(pmem.Config{ID: c.ID, Path: c.File, ReadOnly: c.ReadOnly}, loop)
		if err != nil {
			return err
		}
		dev.SetAddress(gpa)
		s := &pmemSlot{vm: v.vm, slot: v.nextSlot, gpa: gpa, dev: dev}
		if err := v.vm.SetUserMemoryRegion(s.slot, gpa, dev.Mapping(), 0); err != nil {
			dev.Close()
			return fmt.Errorf("virtio-pmem %q: %w", c.ID, err)
		}
		if err := v.attachVirtio(dev, s); err != nil {
			s.Close()
			return fmt.Errorf("virtio-pmem %q: %w", c.ID, err)
		}
		v.nextSlot++
		v.preFaultRanges = append(v.preFaultRanges, guestRange{gpa: gpa, host: dev.Mapping()})
		gpa += uint64(len(dev.Mapping()))
	}
	return nil
}
