package config

import (
	"fmt"
	"strings"
)

// Vsock guest CID limits: 0, 1 and 2 are reserved (2 is the host) and
// 0xffffffff is VMADDR_CID_ANY ("Vsock guest-cid must >= 3 and <
// 4294967295").
const (
	MinGuestCID = 3
	MaxGuestCID = 1<<32 - 1 // exclusive
)

// Vsock backends (VsockBackend*): "" chooses vhost when /dev/vhost-vsock
// can be opened and the userspace unix-socket backend otherwise.
const (
	VsockBackendVhost = "vhost"
	VsockBackendUnix  = "unix"
)

// Vsock is the one virtio-vsock device (-device vsock,id=ID,guest-cid=N
// [,backend=vhost|unix][,uds-path=PATH]; JSON "vsock": {"vsock_id",
// "guest_cid", "backend", "uds_path"}). The seed's form has only id and
// guest-cid; backend and uds-path are this implementation's additions.
type Vsock struct {
	ID string `json:"vsock_id"`
	// GuestCID is wider than the CID so that out-of-range values reach
	// Validate.
	GuestCID uint64 `json:"guest_cid"`
	// Backend is VsockBackendVhost, VsockBackendUnix or "" (see above).
	Backend string `json:"backend,omitempty"`
	// UDSPath is the listening unix socket of the userspace backend
	// (Firecracker's hybrid vsock protocol); it must not exist. Required
	// with backend=unix; with the default backend it is the fallback
	// when vhost-vsock is missing.
	UDSPath string `json:"uds_path,omitempty"`
}

// validateVsock checks the vsock device.
func (c *VMConfig) validateVsock() []error {
	v := c.Vsock
	if v == nil {
		return nil
	}
	var errs []error
	add := func(e *Error) { errs = append(errs, e) }
	const opt = "-device"
	if v.ID == "" {
		add(errorf(opt, "vsock.vsock_id", "vsock: 'id' is missing"))
	} else if len(v.ID) > MaxIDLen {
		add(errorf(opt, "vsock.vsock_id", "vsock id length %d out of range [1, %d]", len(v.ID), MaxIDLen))
	}
	if v.GuestCID < MinGuestCID || v.GuestCID >= MaxGuestCID {
		add(errorf(opt, "vsock.guest_cid", "vsock guest-cid %d out of range: must be >= %d and < %d", v.GuestCID, MinGuestCID, uint64(MaxGuestCID)))
	}
	switch v.Backend {
	case "", VsockBackendVhost, VsockBackendUnix:
	default:
		add(errorf(opt, "vsock.backend", "vsock backend %q is not supported (vhost or unix)", v.Backend))
	}
	switch {
	case v.Backend == VsockBackendUnix && v.UDSPath == "":
		add(errorf(opt, "vsock.uds_path", "vsock backend unix needs uds-path"))
	case v.Backend == VsockBackendVhost && v.UDSPath != "":
		add(errorf(opt, "vsock.uds_path", "vsock uds-path is only for backend unix"))
	case v.UDSPath != "":
		if strings.ContainsRune(v.UDSPath, 0) {
			add(errorf(opt, "vsock.uds_path", "vsock uds-path contains a NUL byte"))
		} else if len(v.UDSPath) > 96 {
			// sun_path is 108 bytes; "_<port>" needs up to 11 more.
			add(errorf(opt, "vsock.uds_path", "vsock uds-path length %d out of range [1, 96]", len(v.UDSPath)))
		} else if e := checkNewPath(opt, "vsock uds-path", v.UDSPath); e != nil {
			e.Field = "vsock.uds_path"
			add(e)
		}
	}
	return errs
}

// VsockOnce is the error for a second vsock device.
func VsockOnce() *Error {
	return errorf("-device", "vsock", "vsock can only be set once for one VM")
}

// String is the -device value for v.
func (v Vsock) String() string {
	s := fmt.Sprintf("vsock,id=%s,guest-cid=%d", v.ID, v.GuestCID)
	if v.Backend != "" {
		s += ",backend=" + v.Backend
	}
	if v.UDSPath != "" {
		s += ",uds-path=" + v.UDSPath
	}
	return s
}
