package seccomp

import "golang.org/x/sys/unix"

// The allow-lists. docs/seccomp.md explains each entry; keep the two in
// step. A device that needs a new syscall after start-up adds it here
// (find it by running with STRATOVIRT_SECCOMP_ACTION=log and reading the
// audit lines in dmesg).

// ioctlTypes are the ioctl "type" bytes (bits 8..15 of the request) the
// VMM issues after start-up: KVM (0xAE: KVM_RUN, KVM_GET/SET_*, irqfd,
// ioeventfd), vhost (0xAF: vhost-vsock/-net set-up when the guest drives
// a device to DRIVER_OK), 'T' (0x54: TCGETS/TCSETS to restore the
// terminal, FIONBIO, FIOCLEX, TUNSETIFF/TUNSETOFFLOAD/TUNSETVNETHDRSZ for
// tap devices) and 0x12 (BLKGETSIZE64, BLKSSZGET for block-device
// backed disks).
var ioctlTypes = []uint32{0xAE00, 0xAF00, 0x5400, 0x1200}

func ioctlRule() Rule {
	return Rule{Name: "ioctl", Nr: unix.SYS_IOCTL, Cond: &Cond{Arg: 1, Mask: 0xff00, Values: ioctlTypes}}
}

func allow(name string, nr uint32) Rule { return Rule{Name: name, Nr: nr} }

// goRuntime are the syscalls Go's runtime makes on any thread once the
// process is running: memory (the heap and goroutine stacks grow on any
// thread, GC assists run on the allocating thread), thread parking and
// wake-up, preemption signals, timers and the exit paths.
func goRuntime() []Rule {
	return []Rule{
		allow("futex", unix.SYS_FUTEX),
		allow("mmap", unix.SYS_MMAP),
		allow("munmap", unix.SYS_MUNMAP),
		allow("madvise", unix.SYS_MADVISE),
		allow("mprotect", unix.SYS_MPROTECT),
		allow("rt_sigaction", unix.SYS_RT_SIGACTION),
		allow("rt_sigprocmask", unix.SYS_RT_SIGPROCMASK),
		allow("rt_sigreturn", unix.SYS_RT_SIGRETURN),
		allow("sigaltstack", unix.SYS_SIGALTSTACK),
		allow("gettid", unix.SYS_GETTID),
		allow("getpid", unix.SYS_GETPID),
		allow("tgkill", unix.SYS_TGKILL),
		allow("sched_yield", unix.SYS_SCHED_YIELD),
		allow("nanosleep", unix.SYS_NANOSLEEP),
		allow("clock_gettime", unix.SYS_CLOCK_GETTIME),
		allow("clock_nanosleep", unix.SYS_CLOCK_NANOSLEEP),
		allow("restart_syscall", unix.SYS_RESTART_SYSCALL),
		allow("exit", unix.SYS_EXIT),
		allow("exit_group", unix.SYS_EXIT_GROUP),
		allow("write", unix.SYS_WRITE), // also the runtime's fatal-error output
		// A garbage collection started by an allocation on this thread
		// polls the network poller from startTheWorld.
		allow("epoll_pwait", unix.SYS_EPOLL_PWAIT),
		allow("epoll_wait", unix.SYS_EPOLL_WAIT),
	}
}

// deviceIO are the file-descriptor operations device emulation makes on
// whatever thread handles the guest's request (vCPU threads for MMIO and
// port I/O, the event loop for completions): disk I/O, eventfd signalling,
// serial output.
func deviceIO() []Rule {
	return []Rule{
		allow("read", unix.SYS_READ),
		allow("readv", unix.SYS_READV),
		allow("writev", unix.SYS_WRITEV),
		allow("pread64", unix.SYS_PREAD64),
		allow("pwrite64", unix.SYS_PWRITE64),
		allow("preadv", unix.SYS_PREADV),
		allow("pwritev", unix.SYS_PWRITEV),
		allow("lseek", unix.SYS_LSEEK),
		allow("fsync", unix.SYS_FSYNC),
		allow("fdatasync", unix.SYS_FDATASYNC),
		allow("msync", unix.SYS_MSYNC), // virtio-pmem flush
		allow("close", unix.SYS_CLOSE),
		allow("epoll_ctl", unix.SYS_EPOLL_CTL),
		ioctlRule(),
	}
}

// VCPU returns the filter for vCPU threads, installed on each vCPU thread
// alone (no TSYNC) on top of the process filter, so a vCPU thread may make
// only syscalls both allow: the Go runtime's, device I/O and KVM/vhost
// ioctls. It cannot open files, create threads or sockets, or unlink.
func VCPU(def Action) Filter {
	return Filter{Rules: append(goRuntime(), deviceIO()...), Default: def}
}

// Process returns the filter for the whole process (installed with
// TSYNC): everything VCPU allows plus what the main goroutine, the QMP
// server, the event loops, logging and hot-plug need after start-up.
// Creating processes (fork, clone without CLONE_THREAD, execve), ptrace,
// mount, module loading, bpf and the like are not allowed.
func Process(def Action) Filter {
	rules := append(goRuntime(), deviceIO()...)
	rules = append(rules,
		// New OS threads for the Go runtime; only threads, never
		// processes: clone must carry CLONE_THREAD. clone3 is refused
		// (Go's runtime does not use it).
		Rule{Name: "clone", Nr: unix.SYS_CLONE, Cond: &Cond{Arg: 0, Mask: unix.CLONE_THREAD, Values: []uint32{unix.CLONE_THREAD}}},
		// A cgo-linked build creates threads through glibc, which tries
		// clone3 first (its flags live in memory where BPF cannot check
		// them, so it fails with ENOSYS and glibc falls back to clone)
		// and registers rseq (ENOSYS: glibc runs without it).
		Rule{Name: "clone3", Nr: unix.SYS_CLONE3, Errno: uint16(unix.ENOSYS)},
		Rule{Name: "rseq", Nr: unix.SYS_RSEQ, Errno: uint16(unix.ENOSYS)},
		allow("set_robust_list", unix.SYS_SET_ROBUST_LIST),
		allow("sched_getaffinity", unix.SYS_SCHED_GETAFFINITY),
		allow("getrandom", unix.SYS_GETRANDOM),
		// The network poller (QMP socket, event loops, os.File I/O).
		allow("epoll_create1", unix.SYS_EPOLL_CREATE1),
		allow("eventfd2", unix.SYS_EVENTFD2),
		allow("pipe2", unix.SYS_PIPE2),
		allow("fcntl", unix.SYS_FCNTL),
		allow("dup", unix.SYS_DUP),
		allow("dup3", unix.SYS_DUP3),
		// QMP: accept clients, read commands with SCM_RIGHTS, reply.
		allow("accept4", unix.SYS_ACCEPT4),
		allow("recvmsg", unix.SYS_RECVMSG),
		allow("sendmsg", unix.SYS_SENDMSG),
		allow("recvfrom", unix.SYS_RECVFROM),
		allow("sendto", unix.SYS_SENDTO),
		allow("shutdown", unix.SYS_SHUTDOWN),
		allow("getsockopt", unix.SYS_GETSOCKOPT),
		allow("getsockname", unix.SYS_GETSOCKNAME),
		allow("getpeername", unix.SYS_GETPEERNAME),
		// Hybrid vsock connects guest-initiated streams to host unix
		// sockets: AF_UNIX sockets only.
		Rule{Name: "socket", Nr: unix.SYS_SOCKET, Cond: &Cond{Arg: 0, Mask: 0xffffffff, Values: []uint32{unix.AF_UNIX}}},
		allow("connect", unix.SYS_CONNECT),
		// Hot-plug (blockdev-add, netdev_add) opens and inspects backing
		// files and tap devices; exit removes the socket and pid files.
		allow("openat", unix.SYS_OPENAT),
		allow("fstat", unix.SYS_FSTAT),
		allow("newfstatat", unix.SYS_NEWFSTATAT),
		allow("statx", unix.SYS_STATX),
		allow("preadv2", unix.SYS_PREADV2), // RWF_NOWAIT: a plugged disk's probe, and every disk's reads from the page cache
		allow("fstatfs", unix.SYS_FSTATFS), // whether a plugged disk's file is in memory (tmpfs)
		allow("fallocate", unix.SYS_FALLOCATE),
		allow("ftruncate", unix.SYS_FTRUNCATE),
		allow("unlinkat", unix.SYS_UNLINKAT),
		// Device timers (balloon, iops throttling) and the disks'
		// io_uring rings (set up again when a disk is plugged; each ring
		// is restricted to vectored reads, writes and fdatasync on its
		// own file before it is enabled: package uring).
		allow("timerfd_create", unix.SYS_TIMERFD_CREATE),
		allow("timerfd_settime", unix.SYS_TIMERFD_SETTIME),
		allow("timerfd_gettime", unix.SYS_TIMERFD_GETTIME),
		allow("io_uring_setup", unix.SYS_IO_URING_SETUP),
		allow("io_uring_enter", unix.SYS_IO_URING_ENTER),
		allow("io_uring_register", unix.SYS_IO_URING_REGISTER),
		// Installing the per-thread vCPU filter after this one (it can
		// only add restrictions), and naming the vCPU and I/O threads,
		// which start after it.
		Rule{Name: "prctl", Nr: unix.SYS_PRCTL, Cond: &Cond{Arg: 0, Mask: 0xffffffff, Values: []uint32{unix.PR_SET_NO_NEW_PRIVS, unix.PR_SET_NAME}}},
		allow("seccomp", unix.SYS_SECCOMP),
	)
	return Filter{Rules: rules, Default: def}
}
