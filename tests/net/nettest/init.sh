#!/bin/sh
# Init of the network test initramfs: loads the virtio modules, configures
# the NICs by MAC (test.nic=MAC/IP/PEER, repeatable), pings each peer,
# moves test.size bytes each way over TCP with the first NIC's peer,
# does a console round trip on /dev/hvc0 and reads /dev/hwrng, then
# powers off.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/load-modules
size=0
nics=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	test.size=*) size=${arg#test.size=} ;;
	test.nic=*) nics="$nics ${arg#test.nic=}" ;;
	esac
done
ip link set lo up
sleep 0.5
first=
for nic in $nics; do
	mac=${nic%%/*}; rest=${nic#*/}; ip=${rest%%/*}; peer=${rest#*/}
	dev=
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
		for d in /sys/class/net/eth*; do
			[ "$(cat $d/address 2>/dev/null)" = "$mac" ] && dev=${d##*/}
		done
		[ -n "$dev" ] && break
		sleep 0.2
	done
	if [ -z "$dev" ]; then echo "NIC $mac missing"; continue; fi
	echo "NIC $mac $dev"
	ip addr add $ip/24 dev $dev
	ip link set $dev up
	if ping -c 3 -W 5 $peer >/dev/null 2>&1; then echo "PING $peer OK"; else echo "PING $peer FAILED"; fi
	[ -z "$first" ] && first=$peer
done
if [ -n "$first" ] && [ "$size" != 0 ]; then
	/nettool send $first:5001 $size
	/nettool recv 0.0.0.0:5002
fi
if [ -e /dev/hvc0 ]; then
	# One open for both directions: the host's answer may arrive between
	# two separate opens, and the tty drops input while nobody has it open.
	exec 3<>/dev/hvc0
	stty -F /dev/hvc0 raw -echo 2>/dev/null
	echo "CONSOLE-OUT from guest" >&3
	read -t 60 line <&3
	exec 3>&-
	echo "CONSOLE-IN $line"
fi
if [ -e /dev/hwrng ]; then
	echo "HWRNG $(cat /sys/class/misc/hw_random/rng_current) $(dd if=/dev/hwrng bs=4096 count=16 2>/dev/null | wc -c)"
fi
echo "GUEST DONE"
poweroff -f
sleep 30
