#!/bin/sh
# Init of the native-interface tests' initramfs: reports what the guest
# sees and then does what test.action= on the kernel command line asks.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
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
*) poweroff -f ;;
esac
sleep 30
