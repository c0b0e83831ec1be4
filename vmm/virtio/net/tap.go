package net

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Tap offload flags for TUNSETOFFLOAD (linux/if_tun.h).
const (
	TunFCsum   = 0x01
	TunFTSO4   = 0x02
	TunFTSO6   = 0x04
	TunFTSOECN = 0x08
	TunFUFO    = 0x10
)

// MaxTapNameLen is the longest interface name (IFNAMSIZ - 1).
const MaxTapNameLen = unix.IFNAMSIZ - 1

// Tap is an open host tap queue in IFF_TAP|IFF_NO_PI|IFF_VNET_HDR mode with
// a HeaderSize vnet header. Its descriptor is non-blocking and close-on-exec.
type Tap struct {
	fd   int
	name string
	// fake marks a test stand-in (a socket pair): no tap ioctls.
	fake    bool
	offload int
}

// OpenTap attaches to the tap called name in the calling thread's network
// namespace, creating it if it does not exist (creation needs
// CAP_NET_ADMIN; a new tap is not persistent and is removed when closed).
// A multi-queue tap is attached as one of its queues.
func OpenTap(name string) (*Tap, error) {
	if name == "" || len(name) > MaxTapNameLen {
		return nil, fmt.Errorf("tap name %q: length out of range [1, %d]", name, MaxTapNameLen)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: open /dev/net/tun: %w", name, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	err = setIff(fd, name, flags)
	if errors.Is(err, unix.EINVAL) {
		// An existing multi-queue tap only accepts IFF_MULTI_QUEUE.
		err = setIff(fd, name, flags|unix.IFF_MULTI_QUEUE)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	t := &Tap{fd: fd, name: name}
	if err := t.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

func setIff(fd int, name string, flags uint16) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(flags)
	return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
}

// TapFromFD uses an already attached tap descriptor (from the containerd
// shim, which opens the tap inside the pod's network namespace). fd is
// duplicated: the caller keeps and closes its own copy. The tap must have
// been attached with IFF_TAP, IFF_NO_PI and IFF_VNET_HDR.
func TapFromFD(fd int) (*Tap, error) {
	if fd < 0 {
		return nil, fmt.Errorf("tap fd %d: invalid", fd)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, fmt.Errorf("tap fd %d: TUNGETIFF (not an attached tap?): %w", fd, err)
	}
	want := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if got := ifr.Uint16(); got&want != want || got&unix.IFF_TUN != 0 {
		return nil, fmt.Errorf("tap fd %d (%s): flags %#x, want IFF_TAP|IFF_NO_PI|IFF_VNET_HDR", fd, ifr.Name(), got)
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap fd %d: dup: %w", fd, err)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("tap fd %d: %w", fd, err)
	}
	t := &Tap{fd: nfd, name: ifr.Name()}
	if err := t.setup(); err != nil {
		unix.Close(nfd)
		return nil, err
	}
	return t, nil
}

// setup sets the vnet header size and clears the offloads until the
// driver negotiates some.
func (t *Tap) setup() error {
	if t.fake {
		return nil
	}
	if err := unix.IoctlSetPointerInt(t.fd, unix.TUNSETVNETHDRSZ, HeaderSize); err != nil {
		return fmt.Errorf("tap %s: TUNSETVNETHDRSZ %d: %w", t.name, HeaderSize, err)
	}
	return t.SetOffload(0)
}

// SetOffload tells the tap which offloads the guest accepts on receive
// (TunF* flags). A kernel without UFO support for taps gets the rest.
func (t *Tap) SetOffload(flags int) error {
	t.offload = flags
	if t.fake {
		return nil
	}
	err := unix.IoctlSetInt(t.fd, unix.TUNSETOFFLOAD, flags)
	if errors.Is(err, unix.EINVAL) && flags&TunFUFO != 0 {
		err = unix.IoctlSetInt(t.fd, unix.TUNSETOFFLOAD, flags&^TunFUFO)
	}
	if err != nil {
		return fmt.Errorf("tap %s: TUNSETOFFLOAD %#x: %w", t.name, flags, err)
	}
	return nil
}

// SetSendBufferUnlimited lifts the tap's send buffer limit
// (TUNSETSNDBUF INT_MAX), as a vhost-net backend wants.
func (t *Tap) SetSendBufferUnlimited() error {
	if t.fake {
		return nil
	}
	if err := unix.IoctlSetPointerInt(t.fd, unix.TUNSETSNDBUF, math.MaxInt32); err != nil {
		return fmt.Errorf("tap %s: TUNSETSNDBUF: %w", t.name, err)
	}
	return nil
}

// Fd is the tap descriptor.
func (t *Tap) Fd() int { return t.fd }

// Name is the interface name ("" for a nil Tap).
func (t *Tap) Name() string {
	if t == nil {
		return ""
	}
	return t.name
}

// Close closes the tap descriptor; a nil Tap has none.
func (t *Tap) Close() error {
	if t == nil || t.fd < 0 {
		return nil
	}
	err := unix.Close(t.fd)
	t.fd = -1
	return err
}

// OpenTapInNetNS opens (or creates) tap name inside the network namespace
// at nsPath (for example /var/run/netns/x or /proc/<pid>/ns/net) and
// returns its descriptor as a file, ready for Config.TapFD or, for a VMM
// process, for -netdev ...,fds=N through ExtraFiles. The calling goroutine
// is not moved: the work happens on a dedicated OS thread that is thrown
// away if it cannot return to its original namespace.
func OpenTapInNetNS(nsPath, name string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is unlocked only if it is back in its own
		// namespace; otherwise it ends with the goroutine.
		f, restored, err := openTapInNetNS(nsPath, name)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

func openTapInNetNS(nsPath, name string) (*os.File, bool, error) {
	self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("open own network namespace: %w", err)
	}
	defer unix.Close(self)
	ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("open network namespace %q: %w", nsPath, err)
	}
	defer unix.Close(ns)
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter network namespace %q: %w", nsPath, err)
	}
	t, openErr := OpenTap(name)
	restored := unix.Setns(self, unix.CLONE_NEWNET) == nil
	if openErr != nil {
		return nil, restored, fmt.Errorf("in network namespace %q: %w", nsPath, openErr)
	}
	// A blocking descriptor keeps os.File away from Go's poller;
	// TapFromFD makes its own copy non-blocking again.
	if err := unix.SetNonblock(t.fd, false); err != nil {
		t.Close()
		return nil, restored, fmt.Errorf("tap %s: %w", name, err)
	}
	return os.NewFile(uintptr(t.fd), "tap:"+name), restored, nil
}
