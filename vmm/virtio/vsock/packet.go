package vsock

import (
	"encoding/binary"
	"fmt"
)

// HeaderSize is the size of struct virtio_vsock_hdr.
const HeaderSize = 44

// Packet types and operations (virtio spec 5.10.6).
const (
	TypeStream = 1

	OpInvalid       = 0
	OpRequest       = 1
	OpResponse      = 2
	OpRst           = 3
	OpShutdown      = 4
	OpRW            = 5
	OpCreditUpdate  = 6
	OpCreditRequest = 7
)

// SHUTDOWN flags: the sender will receive no more / send no more. They
// are sticky for a connection.
const (
	ShutdownRcv  = 1
	ShutdownSend = 2
)

// HostCID is the well-known context id of the host.
const HostCID = 2

// MaxPayload bounds the data of one packet in either direction (as
// Firecracker: guest buffers may overlap, so a larger claim is not
// trusted).
const MaxPayload = 64 << 10

// Header is a decoded virtio_vsock_hdr (all fields little-endian on the
// wire).
type Header struct {
	SrcCID   uint64
	DstCID   uint64
	SrcPort  uint32
	DstPort  uint32
	Len      uint32
	Type     uint16
	Op       uint16
	Flags    uint32
	BufAlloc uint32
	FwdCnt   uint32
}

// ParseHeader decodes the first HeaderSize bytes of b and checks what a
// device must not trust: the packet type, the operation, and a payload
// length within MaxPayload that only RW packets may carry.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("vsock header: %d bytes, want %d", len(b), HeaderSize)
	}
	le := binary.LittleEndian
	h := Header{
		SrcCID:   le.Uint64(b[0:]),
		DstCID:   le.Uint64(b[8:]),
		SrcPort:  le.Uint32(b[16:]),
		DstPort:  le.Uint32(b[20:]),
		Len:      le.Uint32(b[24:]),
		Type:     le.Uint16(b[28:]),
		Op:       le.Uint16(b[30:]),
		Flags:    le.Uint32(b[32:]),
		BufAlloc: le.Uint32(b[36:]),
		FwdCnt:   le.Uint32(b[40:]),
	}
	switch {
	case h.Type != TypeStream:
		return h, fmt.Errorf("vsock header: type %d is not stream", h.Type)
	case h.Op == OpInvalid || h.Op > OpCreditRequest:
		return h, fmt.Errorf("vsock header: invalid op %d", h.Op)
	case h.Len > MaxPayload:
		return h, fmt.Errorf("vsock header: payload %d bytes exceeds %d", h.Len, MaxPayload)
	case h.Op != OpRW && h.Len != 0:
		return h, fmt.Errorf("vsock header: op %d carries %d payload bytes", h.Op, h.Len)
	}
	return h, nil
}

// Encode writes h into the first HeaderSize bytes of b.
func (h *Header) Encode(b []byte) {
	_ = b[HeaderSize-1]
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], h.Op)
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}

// OpName names an operation for logs.
func OpName(op uint16) string {
	switch op {
	case OpRequest:
		return "REQUEST"
	case OpResponse:
		return "RESPONSE"
	case OpRst:
		return "RST"
	case OpShutdown:
		return "SHUTDOWN"
	case OpRW:
		return "RW"
	case OpCreditUpdate:
		return "CREDIT_UPDATE"
	case OpCreditRequest:
		return "CREDIT_REQUEST"
	}
	return fmt.Sprintf("op(%d)", op)
}

// ParseConnect parses the host side's handshake line "CONNECT <port>\n"
// (keyword case-insensitive, decimal port) as Firecracker's hybrid vsock
// does. line excludes the newline.
func ParseConnect(line []byte) (uint32, error) {
	const kw = "connect "
	if len(line) <= len(kw) || len(line) > MaxConnectLine {
		return 0, fmt.Errorf("vsock: bad handshake %q", line)
	}
	for i := 0; i < len(kw); i++ {
		c := line[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != kw[i] {
			return 0, fmt.Errorf("vsock: bad handshake %q (want CONNECT <port>)", line)
		}
	}
	var port uint64
	for _, c := range line[len(kw):] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("vsock: bad port in handshake %q", line)
		}
		port = port*10 + uint64(c-'0')
		if port > 0xffffffff {
			return 0, fmt.Errorf("vsock: port out of range in handshake %q", line)
		}
	}
	return uint32(port), nil
}

// MaxConnectLine bounds the handshake line (without the newline).
const MaxConnectLine = 31
