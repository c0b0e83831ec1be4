package net

import (
	"encoding/binary"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

// HeaderSize is the size of struct virtio_net_hdr with VIRTIO_F_VERSION_1
// (num_buffers included); the tap is set to the same size, so the header
// passes unchanged between the rings and the tap.
const HeaderSize = 12

// Header flags and GSO types (virtio spec 5.1.6).
const (
	HdrFNeedsCsum = 1
	HdrFDataValid = 2

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOECN   = 0x80
)

// Header is a decoded virtio_net_hdr.
type Header struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
	NumBuffers uint16
}

// ParseHeader decodes the first HeaderSize bytes of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("virtio-net header: %d bytes, want %d", len(b), HeaderSize)
	}
	le := binary.LittleEndian
	return Header{
		Flags: b[0], GSOType: b[1], HdrLen: le.Uint16(b[2:]), GSOSize: le.Uint16(b[4:]),
		CsumStart: le.Uint16(b[6:]), CsumOffset: le.Uint16(b[8:]), NumBuffers: le.Uint16(b[10:]),
	}, nil
}

// Put encodes h into the first HeaderSize bytes of b.
func (h Header) Put(b []byte) {
	le := binary.LittleEndian
	b[0], b[1] = h.Flags, h.GSOType
	le.PutUint16(b[2:], h.HdrLen)
	le.PutUint16(b[4:], h.GSOSize)
	le.PutUint16(b[6:], h.CsumStart)
	le.PutUint16(b[8:], h.CsumOffset)
	le.PutUint16(b[10:], h.NumBuffers)
}

// CheckTx validates the header of a frame the driver transmits: only the
// NEEDS_CSUM flag, a checksum location inside the packet (packetLen bytes
// after the header) and only offloads the device offered and the driver
// accepted (features are the negotiated ones). The host kernel validates
// the header again when the tap gets the frame; this keeps requests the
// driver was never allowed to make away from it.
func (h Header) CheckTx(features uint64, packetLen int) error {
	if h.Flags&^HdrFNeedsCsum != 0 {
		return fmt.Errorf("virtio-net tx: flags %#x", h.Flags)
	}
	if h.Flags&HdrFNeedsCsum != 0 {
		if !virtio.HasFeature(features, FCsum) {
			return fmt.Errorf("virtio-net tx: NEEDS_CSUM without VIRTIO_NET_F_CSUM")
		}
		if int(h.CsumStart)+int(h.CsumOffset)+2 > packetLen {
			return fmt.Errorf("virtio-net tx: checksum at %d+%d outside the %d-byte packet", h.CsumStart, h.CsumOffset, packetLen)
		}
	}
	gso := h.GSOType &^ GSOECN
	if h.GSOType&GSOECN != 0 && !virtio.HasFeature(features, FHostECN) {
		return fmt.Errorf("virtio-net tx: GSO ECN without VIRTIO_NET_F_HOST_ECN")
	}
	var need uint
	switch gso {
	case GSONone:
		if h.GSOType != GSONone {
			return fmt.Errorf("virtio-net tx: ECN bit without a GSO type")
		}
		return nil
	case GSOTCPv4:
		need = FHostTSO4
	case GSOTCPv6:
		need = FHostTSO6
	case GSOUDP:
		need = FHostUFO
	default:
		return fmt.Errorf("virtio-net tx: GSO type %d", h.GSOType)
	}
	if !virtio.HasFeature(features, need) {
		return fmt.Errorf("virtio-net tx: GSO type %d not negotiated", h.GSOType)
	}
	if h.GSOSize == 0 {
		return fmt.Errorf("virtio-net tx: GSO type %d with gso_size 0", h.GSOType)
	}
	return nil
}
