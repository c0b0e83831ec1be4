#!/bin/sh
# Init of the native-interface tests' initramfs: reports what the guest
# sees and then does what test.action= on the kernel command line asks.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# virtio drivers (modules in the cloud kernel) for the seed examples' devices
[ -x /bin/load-modules ] && /bin/load-modules >/dev/null 2>&1
echo "NPROC=$(nproc)"
grep MemTotal /proc/meminfo
action=poweroff
for arg in $(cat /proc/cmdline); do
	case "$arg" in test.action=*) action=${arg#test.action=} ;; esac
done
echo "ACTION=$action"
case "$action" in
tick)
	# Progress the host can watch: a line every 100 ms, forever.
	i=0
	while true; do
		echo "TICK $i"
		i=$((i + 1))
		usleep 100000 2>/dev/null || sleep 1
	done
	;;
sleep) sleep 600 ;;
seed)
	# Report the devices the seed examples attach, then power off.
	for b in /sys/block/vd*; do
		[ -e "$b" ] && echo "DISK ${b##*/} serial=$(cat "$b/serial" 2>/dev/null) size=$(cat "$b/size")"
	done
	mkdir -p /mnt
	if mount -t ext4 /dev/vda /mnt; then
		echo "ROOTFS $(cat /mnt/hello)"
		echo written-by-guest >/mnt/guest
		umount /mnt
	fi
	for n in /sys/class/net/eth*; do
		[ -e "$n" ] && echo "NIC ${n##*/} $(cat "$n/address")"
	done
	[ -c /dev/hvc0 ] && echo "CONSOLE hvc0"
	[ -c /dev/vsock ] && echo "VSOCK present"
	poweroff -f
	;;
*) poweroff -f ;;
esac
sleep 30
