#!/bin/sh
# Init of the virtio-blk test initramfs: loads the virtio modules, reports
# the disks the guest sees, runs guestio with the test.run= steps from the
# kernel command line (steps "name:arg:..." separated by ';') and powers
# off.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/load-modules
run=
for arg in $(cat /proc/cmdline); do
	case "$arg" in test.run=*) run=${arg#test.run=} ;; esac
done
# Wait for the disks to appear (probing is asynchronous).
want=$(echo "$run" | grep -o '/dev/vd[a-z]' | sort -u)
i=0
while [ $i -lt 50 ]; do
	missing=
	for d in $want; do [ -b "$d" ] || missing=1; done
	[ -z "$missing" ] && break
	sleep 0.1
	i=$((i + 1))
done
for b in /sys/block/vd*; do
	[ -e "$b" ] || continue
	n=${b##*/}
	echo "DISK $n size=$(cat $b/size) ro=$(cat $b/ro) serial=$(cat $b/serial 2>/dev/null)"
done
/guestio "$run"
echo "GUEST DONE"
poweroff -f
sleep 30
