package native

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

// logSeccomp makes the filters allow and log instead of kill, so that
// checkSeccompLog can list every syscall a run would have been killed for.
const logSeccomp = "STRATOVIRT_SECCOMP_ACTION=log"

var auditRe = regexp.MustCompile(`type=1326 .* pid=(\d+) .* syscall=(\d+)`)

// seccompAudit returns the syscalls the kernel logged for pid.
func seccompAudit(t *testing.T, pid int) []string {
	t.Helper()
	out, err := exec.Command("dmesg").CombinedOutput()
	if err != nil {
		t.Logf("dmesg: %v", err)
		return nil
	}
	var calls []string
	for _, m := range auditRe.FindAllStringSubmatch(string(out), -1) {
		if m[1] == strconv.Itoa(pid) {
			calls = append(calls, m[2])
		}
	}
	return calls
}

// checkSeccompLog fails if a run with logSeccomp made syscalls the
// allow-lists miss.
func checkSeccompLog(t *testing.T, p *vmProc) {
	t.Helper()
	if calls := seccompAudit(t, p.cmd.Process.Pid); len(calls) > 0 {
		t.Errorf("seccomp would have killed the VMM: syscalls %v (see vmm/seccomp/allowlist.go)", calls)
	}
}

// loopDevice attaches the seed rootfs image to a loop device: the seed's
// drives default to direct=on (O_DIRECT), which the lab's tmpfs lacks.
func loopDevice(t *testing.T) string {
	t.Helper()
	img := filepath.Join(shortTemp(t), "rootfs.ext4")
	data, err := os.ReadFile(os.Getenv(envRootfs))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// checkSeedDisk checks that the guest read the rootfs and that its write
// reached the image.
func checkSeedDisk(t *testing.T, out, dev, serial string) {
	t.Helper()
	if !strings.Contains(out, "ROOTFS seed-rootfs-ok") {
		t.Errorf("guest did not read the rootfs disk:\n%s", out)
	}
	if !strings.Contains(out, "DISK vda serial="+serial+" ") {
		t.Errorf("guest does not see vda with serial %q:\n%s", serial, out)
	}
	mnt := shortTemp(t)
	if err := exec.Command("mount", "-o", "ro", dev, mnt).Run(); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	defer exec.Command("umount", mnt).Run()
	if b, err := os.ReadFile(filepath.Join(mnt, "guest")); err != nil || string(b) != "written-by-guest\n" {
		t.Errorf("guest write not on the disk: %q, %v", b, err)
	}
}

// TestSeedCommandLine boots the seed document's command-line example:
//
//	-kernel /path/to/vmlinux.bin -append console=ttyS0 root=/dev/vda rw reboot=k panic=1
//	-drive file=/home/rootfs.ext4,id=rootfs,readonly=false
//	-api-channel unix:/tmp/stratovirt.socket -serial stdio
//
// with the paths substituted (the drive is a loop device over the image,
// see loopDevice), an -initrd added (the cloud kernel has virtio_blk as a
// module, so the test initramfs loads the drivers and mounts /dev/vda
// itself instead of booting from root=) and "quiet": a whole boot log on
// the serial console froze the lab nearly every time (QEMU's emulated SVM
// stops delivering interrupts under thousands of UART exits; see
// docs/performance.md, "the lab freeze"), and the test reads only what
// its init prints.
func TestSeedCommandLine(t *testing.T) {
	sock := filepath.Join(shortTemp(t), "stratovirt.socket")
	dev := loopDevice(t)
	p := startVMM(t, os.Getenv(envVMM), []string{logSeccomp},
		"-kernel", os.Getenv(envKernel),
		"-append", "console=ttyS0", "root=/dev/vda", "rw", "reboot=k", "panic=1", "quiet", "test.action=seed",
		"-drive", "file="+dev+",id=rootfs,readonly=false",
		"-initrd", os.Getenv(envInitrd),
		"-api-channel", "unix:"+sock,
		"-serial", "stdio")
	if code := p.wait(90 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
	checkSeedDisk(t, p.output(), dev, "")
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("api-channel socket left behind: %v", err)
	}
	checkSeccompLog(t, p)
}

// TestSeedJSON boots the seed document's JSON example verbatim but for
// the paths (the drive is a loop device, see loopDevice; the tap is made
// by the test; initrd_fs_path added, as in TestSeedCommandLine).
func TestSeedJSON(t *testing.T) {
	dir := shortTemp(t)
	dev := loopDevice(t)
	if out, err := exec.Command("ip", "tuntap", "add", "dev", "tap0", "mode", "tap").CombinedOutput(); err != nil {
		t.Fatalf("create tap0: %v: %s", err, out)
	}
	defer exec.Command("ip", "link", "del", "tap0").Run()
	console := filepath.Join(dir, "console.socket")
	cfg := fmt.Sprintf(`{
  "boot-source": {
    "kernel_image_path": %q,
    "boot_args": "console=ttyS0 reboot=k panic=1 pci=off tsc=reliable ipv6.disable=1 root=/dev/vda quiet rw test.action=seed",
    "initrd_fs_path": %q
  },
 "machine-config": {
    "type": "MicroVm",
    "vcpu_count": 2,
    "mem_size": 268435456
  },
  "drive": [
    {
      "drive_id": "rootfs",
      "path_on_host": %q,
      "serial_num": "11111111",
      "direct": true,
      "read_only": false,
      "iops": 200000,
      "iothread": "iothread2"
    }
  ],
  "net": [
    {
      "iface_id": "net0",
      "host_dev_name": "tap0",
      "mac": "0e:90:df:9f:a8:88",
      "iothread": "iothread1"
    }
  ],
  "console": [
    {
    "console_id": "charconsole0",
    "socket_path": %q
    }
  ],
  "serial": {
    "stdio": true
  },
  "vsock": {
    "vsock_id": "vsock-123321132",
    "guest_cid": 4
  },
  "iothread": [
    {"id": "iothread1"},
    {"id": "iothread2"}
  ]
}`, os.Getenv(envKernel), os.Getenv(envInitrd), dev, console)
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "stratovirt.socket")
	p := startVMM(t, os.Getenv(envVMM), []string{logSeccomp}, "-config", path, "-api-channel", "unix:"+sock)
	if code := p.wait(90 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
	out := p.output()
	for _, want := range []string{"NPROC=2", "NIC eth0 0e:90:df:9f:a8:88", "CONSOLE hvc0", "VSOCK present"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output lacks %q:\n%s", want, out)
		}
	}
	checkSeedDisk(t, out, dev, "11111111")
	if _, err := os.Lstat(console); !os.IsNotExist(err) {
		t.Errorf("console socket left behind: %v", err)
	}
	checkSeccompLog(t, p)
}

// TestQMPSession stops and continues a guest that prints a line every
// 100 ms, checks query-status and query-cpus, and quits it.
func TestQMPSession(t *testing.T) {
	sock := filepath.Join(shortTemp(t), "qmp.sock")
	p := startVMM(t, os.Getenv(envVMM), []string{logSeccomp},
		"-kernel", os.Getenv(envKernel), "-initrd", os.Getenv(envInitrd), "-smp", "2",
		"-append", "console=ttyS0 quiet panic=1 test.action=tick",
		"-api-channel", "unix:"+sock, "-serial", "stdio")
	p.waitLine("TICK 3", 90*time.Second)
	q := dialQMP(t, sock)

	st := q.exec("query-status")["return"].(map[string]any)
	if st["status"] != "running" || st["running"] != true {
		t.Errorf("query-status while running: %v", st)
	}
	cpus, _ := q.exec("query-cpus")["return"].([]any)
	if len(cpus) != 2 {
		t.Fatalf("query-cpus: %v", cpus)
	}
	for i, c := range cpus {
		m := c.(map[string]any)
		tid := int(m["thread_id"].(float64))
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", p.cmd.Process.Pid, tid))
		if m["CPU"] != float64(i) || err != nil {
			t.Errorf("query-cpus[%d] = %v: thread %d not in the VMM (%v)", i, m, tid, err)
		} else if name, want := strings.TrimSpace(string(comm)), fmt.Sprintf("CPU %d/KVM", i); name != want {
			t.Errorf("vCPU %d's thread %d is named %q, want %q", i, tid, name, want)
		}
	}

	if r := q.exec("stop"); r["return"] == nil {
		t.Fatalf("stop: %v", r)
	}
	stopAt := time.Now()
	if e := q.event("STOP"); e["timestamp"] == nil {
		t.Errorf("STOP without timestamp: %v", e)
	}
	time.Sleep(200 * time.Millisecond) // a line in flight may still arrive
	before := p.count("TICK ")
	time.Sleep(1500 * time.Millisecond)
	if after := p.count("TICK "); after != before {
		t.Errorf("guest progressed while stopped: %d → %d ticks", before, after)
	}
	st = q.exec("query-status")["return"].(map[string]any)
	if st["status"] != "paused" || st["running"] != false {
		t.Errorf("query-status while stopped: %v", st)
	}
	if r := q.exec("cont"); r["return"] == nil {
		t.Fatalf("cont: %v", r)
	}
	q.event("RESUME")
	deadline := time.Now().Add(10 * time.Second)
	for p.count("TICK ") < before+3 {
		if time.Now().After(deadline) {
			t.Fatalf("guest did not progress after cont:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("paused for %v; ticks resumed after cont", time.Since(stopAt).Round(time.Millisecond))
	if st := q.exec("query-status")["return"].(map[string]any); st["status"] != "running" {
		t.Errorf("query-status after cont: %v", st)
	}

	if r := q.exec("quit"); r["return"] == nil {
		t.Fatalf("quit: %v", r)
	}
	e := q.event("SHUTDOWN")
	if d, _ := e["data"].(map[string]any); d["guest"] != false || d["reason"] != "host-qmp-quit" {
		t.Errorf("SHUTDOWN %v", e)
	}
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after quit:\n%s", code, p.output())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	checkSeccompLog(t, p)
}

// TestDaemonizePidfile: the parent returns 0 once the VM runs, the pid
// file names the detached daemon (its own session), and quit removes it.
func TestDaemonizePidfile(t *testing.T) {
	dir := shortTemp(t)
	sock, pidfile, logf := filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "vm.pid"), filepath.Join(dir, "vm.log")
	start := time.Now()
	cmd := exec.Command(os.Getenv(envVMM), "-kernel", os.Getenv(envKernel), "-initrd", os.Getenv(envInitrd),
		"-append", "console=ttyS0 quiet panic=1 test.action=sleep",
		"-api-channel", "unix:"+sock, "-daemonize", "-pidfile", pidfile, "-D", logf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("daemonize: %v\n%s", err, out)
	}
	t.Logf("parent returned after %v", time.Since(start).Round(time.Millisecond))
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == cmd.Process.Pid {
		t.Fatalf("pid file holds %q (parent was %d)", b, cmd.Process.Pid)
	}
	if fi, _ := os.Stat(pidfile); fi.Mode().Perm() != 0o600 {
		t.Errorf("pid file mode %v", fi.Mode())
	}
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("daemon %d: session %d, %v; want its own session", pid, sid, err)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if filepath.Base(exe) != "stratovirt" {
		t.Errorf("pid %d is %q", pid, exe)
	}
	q := dialQMP(t, sock)
	if st := q.exec("query-status")["return"].(map[string]any); st["status"] != "running" {
		t.Errorf("query-status: %v", st)
	}
	q.exec("quit")
	q.event("SHUTDOWN")
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, perr := os.Stat(pidfile)
		_, serr := os.Lstat(sock)
		if os.IsNotExist(perr) && os.IsNotExist(serr) && !alive(pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after quit: pid file %v, socket %v, process alive %v", perr, serr, alive(pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l, err := os.ReadFile(logf); err != nil || !strings.Contains(string(l), "seccomp filters on") {
		t.Errorf("-D log file: %v\n%s", err, l)
	}
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// TestSeccompKills: a forbidden syscall on the main thread (process
// filter) or on a vCPU thread (vCPU filter) kills the VMM with SIGSYS,
// and the kernel logs it.
func TestSeccompKills(t *testing.T) {
	for _, tc := range []struct{ mode, syscall string }{
		{"main", strconv.Itoa(unix.SYS_GETPPID)},
		{"vcpu", strconv.Itoa(unix.SYS_OPENAT)},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p := startVMM(t, os.Getenv(envVMMTest), []string{"STRATOVIRT_TEST_SECCOMP=" + tc.mode},
				"-kernel", os.Getenv(envKernel), "-initrd", os.Getenv(envInitrd), "-smp", "2",
				"-append", "console=ttyS0 quiet panic=1", "-serial", "stdio")
			p.wait(60 * time.Second)
			ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Fatalf("VMM ended with %v, want SIGSYS:\n%s", p.cmd.ProcessState, p.output())
			}
			if strings.Contains(p.output(), "survived") {
				t.Fatalf("forbidden syscall returned:\n%s", p.output())
			}
			if calls := seccompAudit(t, p.cmd.Process.Pid); len(calls) == 0 || calls[0] != tc.syscall {
				t.Errorf("kernel audit log for the kill: %v, want syscall %s", calls, tc.syscall)
			}
		})
	}
}

// TestHugepages reserves huge pages in the lab, mounts hugetlbfs and
// boots with -mem-path there; sizes that are not a multiple of the huge
// page size and a pool too small for the guest are clear errors.
func TestHugepages(t *testing.T) {
	if !lab.InLab() && os.Getuid() != 0 {
		t.Skip("needs root to reserve huge pages")
	}
	if err := os.WriteFile("/proc/sys/vm/nr_hugepages", []byte("140\n"), 0); err != nil {
		t.Skipf("cannot reserve huge pages: %v", err)
	}
	t.Cleanup(func() { os.WriteFile("/proc/sys/vm/nr_hugepages", []byte("0\n"), 0) })
	mnt := shortTemp(t)
	if err := unix.Mount("hugetlbfs", mnt, "hugetlbfs", 0, "pagesize=2M"); err != nil {
		t.Skipf("mount hugetlbfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	free := func() string {
		b, _ := os.ReadFile("/proc/meminfo")
		return regexp.MustCompile(`HugePages_Free:\s+(\d+)`).FindStringSubmatch(string(b))[1]
	}
	t.Logf("huge pages free before: %s", free())

	p := startVMM(t, os.Getenv(envVMM), []string{logSeccomp},
		"-kernel", os.Getenv(envKernel), "-initrd", os.Getenv(envInitrd), "-m", "256M", "-mem-path", mnt,
		"-append", "console=ttyS0 quiet panic=1 test.action=sleep", "-serial", "stdio")
	p.waitLine("ACTION=sleep", 90*time.Second)
	if f := free(); f != "12" {
		t.Errorf("HugePages_Free while the guest runs: %s, want 12 (140 - 128)", f)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
	if f := free(); f != "140" {
		t.Errorf("HugePages_Free after exit: %s", f)
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Errorf("backing file left in %s: %v", mnt, ents)
	}
	checkSeccompLog(t, p)

	for _, tc := range []struct{ mem, want string }{
		{"257M", "not a multiple of the huge page size 2097152"},
		{"512M", "reserve more with sysctl vm.nr_hugepages"},
	} {
		cmd := exec.Command(os.Getenv(envVMM), "-kernel", os.Getenv(envKernel), "-m", tc.mem, "-mem-path", mnt)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), tc.want) {
			t.Errorf("-m %s: %v\n%s", tc.mem, err, out)
		}
	}
}

// TestMemShare boots with guest RAM in a memfd (mem-share=on, no path)
// and with dump-guest-core=off.
func TestMemShare(t *testing.T) {
	p := startVMM(t, os.Getenv(envVMM), nil,
		"-kernel", os.Getenv(envKernel), "-initrd", os.Getenv(envInitrd),
		"-machine", "microvm,mem-share=on,dump-guest-core=off",
		"-append", "console=ttyS0 quiet panic=1 test.action=sleep", "-serial", "stdio")
	p.waitLine("ACTION=sleep", 90*time.Second)
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.cmd.Process.Pid))
	if !strings.Contains(string(maps), "/memfd:stratovirt_anon_mem") {
		t.Errorf("no memfd mapping in the VMM:\n%s", maps)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
}
