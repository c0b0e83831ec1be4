package vmm

import (
	"errors"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/virtio/balloon"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/mmio"
)

// BalloonInfo is the balloon's state in QMP's terms (bytes of guest RAM).
type BalloonInfo struct {
	// Actual is the guest's RAM minus what it has put in the balloon
	// (query-balloon's "actual").
	Actual uint64
	// Target is the guest RAM size the host asked for (the last
	// SetBalloonTarget, or all of RAM).
	Target uint64
	// RAM is the guest's RAM size.
	RAM uint64
	// Released and Returned count bytes the guest handed to the host
	// (inflate) and took back (deflate) since start.
	Released, Returned uint64
	// Reported counts bytes of free memory the guest reported and the
	// host released (free page reporting) since start.
	Reported uint64
	// Stats are the guest's last memory statistics by name (free-memory,
	// total-memory, ...), bytes or counts as the guest reports them.
	Stats map[string]uint64
}

// ErrNoBalloon is returned by the balloon API when the VM has none
// (QMP: DeviceNotActive "No balloon device has been activated").
var ErrNoBalloon = errors.New("no balloon device has been activated")

// virtioBalloon is the balloon and the transport that raises its
// configuration interrupts.
type virtioBalloon struct {
	dev       *balloon.Balloon
	transport *mmio.Transport
}

// setupBalloon attaches the balloon device, if configured, on the default
// event loop.
func (v *VM) setupBalloon() error {
	c := v.cfg.Balloon
	if c == nil {
		return nil
	}
	loop, err := v.eventLoop("")
	if err != nil {
		return err
	}
	m := v.cfg.Machine
	dev := balloon.New(balloon.Config{DeflateOnOOM: c.DeflateOnOOM, FreePageReporting: c.FreePageReporting, Shared: m.MemShare || m.MemPath != ""}, loop)
	if err := v.attachVirtio(dev, dev); err != nil {
		return fmt.Errorf("balloon: %w", err)
	}
	v.virtio.balloon = &virtioBalloon{dev: dev, transport: v.virtio.slots[len(v.virtio.slots)-1].transport}
	return nil
}

// SetBalloonTarget asks the guest to shrink (or grow back) to bytes of
// RAM, as QMP's balloon command: the value is clamped to the RAM size and
// rounded down to 4 KiB; the guest is told with a configuration
// interrupt and inflates or deflates in the background.
func (v *VM) SetBalloonTarget(bytes uint64) error {
	b := v.virtio.balloon
	if b == nil {
		return ErrNoBalloon
	}
	ram := v.mem.Size()
	bytes = min(bytes, ram)
	pages := (ram - bytes) / balloon.PageSize
	b.dev.SetTarget(uint32(min(pages, 1<<32-1)))
	if err := b.transport.ConfigChanged(); err != nil {
		return fmt.Errorf("balloon: %w", err)
	}
	return nil
}

// BalloonInfo reports the balloon's state.
func (v *VM) BalloonInfo() (BalloonInfo, error) {
	b := v.virtio.balloon
	if b == nil {
		return BalloonInfo{}, ErrNoBalloon
	}
	ram := v.mem.Size()
	inflated, deflated := b.dev.Counters()
	info := BalloonInfo{
		RAM:      ram,
		Actual:   ram - min(ram, uint64(b.dev.Actual())*balloon.PageSize),
		Target:   ram - min(ram, uint64(b.dev.Target())*balloon.PageSize),
		Released: inflated * balloon.PageSize,
		Returned: deflated * balloon.PageSize,
		Reported: b.dev.Reported(),
		Stats:    map[string]uint64{},
	}
	for _, s := range b.dev.Stats() {
		if name := balloon.StatName(s.Tag); name != "" {
			info.Stats[name] = s.Val
		}
	}
	return info, nil
}

// RequestBalloonStats asks the guest for fresh memory statistics; they
// show in BalloonInfo once the guest has answered.
func (v *VM) RequestBalloonStats() error {
	if v.virtio.balloon == nil {
		return ErrNoBalloon
	}
	v.virtio.balloon.dev.RequestStats()
	return nil
}
