#!/bin/sh
# Stage 2 of the lab guest: runs in the overlay of the host's root. Mounts
# the usual filesystems, loads the modules KVM, vsock, tap, loop, ext4 and
# CNI need, runs the job's command with stdout on ttyS1 and stderr on ttyS2,
# reports its exit status on the console and powers off. A heartbeat on
# ttyS3 tells the host that the lab kernel still runs (lab.Options.FreezeTimeout).
job=$1
. "$job/env.sh"
export PATH=$LAB_PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 run /run
stty -F /dev/ttyS3 raw -echo 2>/dev/null
(while :; do echo; sleep "$LAB_BEAT_SECONDS"; done) </dev/null >/dev/ttyS3 2>/dev/null &
echo $! >/run/lab-heartbeat.pid
mkdir -p /var/lib/containerd /run/lock
mount -t tmpfs -o mode=0711 containerd /var/lib/containerd
# Nothing persists: give the command its own /var/tmp as well.
mount -t tmpfs -o mode=1777 vartmp /var/tmp
# With huge pages on (LAB_THP), they come only at fault time: khugepaged
# collapsing a nested guest's RAM soft-locked a lab CPU for minutes (seen
# in CI), so it sleeps and never defragments.
thp=/sys/kernel/mm/transparent_hugepage
if ! grep -q '\[never\]' $thp/enabled 2>/dev/null; then
	echo never >$thp/defrag
	echo 0 >$thp/khugepaged/defrag
	echo 4294967295 >$thp/khugepaged/scan_sleep_millisecs
	echo 4294967295 >$thp/khugepaged/alloc_sleep_millisecs
fi
for m in $LAB_MODULES; do
	modprobe -d "$LAB_KERNEL_DIR" -S "$LAB_KERNEL_VERSION" "$m" 2>/dev/console ||
		echo "lab: modprobe $m failed" >/dev/console
done
if [ -n "$LAB_OUT" ]; then
	mkdir -p "$LAB_OUT"
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out "$LAB_OUT" ||
		echo "lab: mount of the output directory failed" >/dev/console
fi
ip link set lo up 2>/dev/null
hostname lab 2>/dev/null
stty -F /dev/ttyS1 raw -echo 2>/dev/null
stty -F /dev/ttyS2 raw -echo 2>/dev/null
cd "$LAB_DIR" || echo "lab: cd $LAB_DIR failed" >/dev/console
/bin/sh "$job/cmd.sh" </dev/null >/dev/ttyS1 2>/dev/ttyS2
rc=$?
cd /
[ -n "$LAB_OUT" ] && sync && umount "$LAB_OUT"
echo "LAB-EXIT-$LAB_NONCE=$rc" >/dev/ttyS0
echo o >/proc/sysrq-trigger
# Power-off is asynchronous; wait for it without touching the filesystem.
while :; do :; done
