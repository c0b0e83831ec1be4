#!/bin/sh
# Stage 1 of the lab guest: PID 1 in the initramfs. Loads the modules that
# 9p and overlayfs need, puts a tmpfs overlay over the host's root (shared
# read-only over 9p) and switches into it to run stage 2 from the job dir.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
	echo "lab: $*" >/dev/console
	echo o >/proc/sysrq-trigger
	sleep 10
}
for m in $(cat /modules.order); do
	insmod "/modules/$m" || fail "insmod $m failed"
done
job=
for arg in $(cat /proc/cmdline); do
	case "$arg" in lab.job=*) job=${arg#lab.job=} ;; esac
done
[ -n "$job" ] || fail "no lab.job= on the kernel command line"
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower || fail "mount hostroot"
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || fail "mount overlay"
umount /proc /sys
umount /dev
exec switch_root /newroot /bin/sh "$job/stage2.sh" "$job"
