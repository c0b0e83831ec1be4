#!/bin/sh
# Init of the hot-plug test initramfs. It reports the disks and NICs the
# guest sees at boot, then follows what the host plugs over QMP: for each
# serial in test.serials= it waits for a disk with that serial and a
# non-zero size, mounts it read-only and prints hello.txt, unmounts it and
# waits for the size to drop to 0; then for test.nicrounds= rounds it
# waits for a NIC with carrier, pings 10.9.<round>.1 from 10.9.<round>.2
# and waits for the carrier to go. The host ends the VM with QMP quit.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/load-modules
ip link set lo up
disks=0 nics=0 serials= rounds=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	test.disks=*) disks=${arg#test.disks=} ;;
	test.nics=*) nics=${arg#test.nics=} ;;
	test.serials=*) serials=$(echo "${arg#test.serials=}" | tr , ' ') ;;
	test.nicrounds=*) rounds=${arg#test.nicrounds=} ;;
	esac
done

# wait_for COND SECONDS: evaluates COND every 0.1 s until it holds.
wait_for() {
	n=0
	while [ $n -lt $(($2 * 10)) ]; do
		eval "$1" && return 0
		sleep 0.1
		n=$((n + 1))
	done
	return 1
}
count() { ls -d $1 2>/dev/null | wc -l; }
wait_for '[ $(count "/sys/block/vd*") -ge $disks ] && [ $(count "/sys/class/net/eth*") -ge $nics ]' 20
for b in /sys/block/vd*; do
	[ -e "$b" ] && echo "DISK ${b##*/} size=$(cat $b/size) serial=[$(cat $b/serial)]"
done
for n in /sys/class/net/eth*; do
	[ -e "$n" ] && ip link set ${n##*/} up
done
sleep 1
for n in /sys/class/net/eth*; do
	[ -e "$n" ] && echo "NIC ${n##*/} carrier=$(cat $n/carrier) mac=$(cat $n/address)"
done
echo "READY"

# find_serial SERIAL: prints the disk whose serial is SERIAL.
find_serial() {
	for b in /sys/block/vd*; do
		if [ "$(cat $b/serial)" = "$1" ]; then
			echo ${b##*/}
			return 0
		fi
	done
	return 1
}
mkdir -p /mnt
for ser in $serials; do
	if ! wait_for 'd=$(find_serial '$ser') && [ "$(cat /sys/block/$d/size)" != 0 ]' 120; then
		echo "TIMEOUT disk $ser"
		break
	fi
	echo "FOUND $ser $d size=$(cat /sys/block/$d/size)"
	if mount -t ext4 -o ro /dev/$d /mnt; then
		echo "CONTENT $ser $(cat /mnt/hello.txt)"
		umount /mnt
	else
		echo "MOUNT FAILED $ser"
	fi
	echo "UNMOUNTED $ser"
	if wait_for '[ "$(cat /sys/block/'$d'/size)" = 0 ]' 120; then
		echo "GONE $ser $d size=0 serial=[$(cat /sys/block/$d/serial)]"
	else
		echo "TIMEOUT gone $ser"
	fi
done

# up_nic: prints a NIC whose carrier is up.
up_nic() {
	for n in /sys/class/net/eth*; do
		if [ "$(cat $n/carrier 2>/dev/null)" = 1 ]; then
			echo ${n##*/}
			return 0
		fi
	done
	return 1
}
r=1
while [ $r -le $rounds ]; do
	if ! wait_for 'e=$(up_nic)' 120; then
		echo "TIMEOUT carrier up $r"
		break
	fi
	echo "CARRIER UP $r $e"
	ip addr add 10.9.$r.2/24 dev $e
	ok=
	for i in $(seq 1 30); do
		if ping -c 1 -W 1 10.9.$r.1 >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 0.2
	done
	[ -n "$ok" ] && echo "PING OK $r" || echo "PING FAILED $r"
	if wait_for '[ "$(cat /sys/class/net/'$e'/carrier)" = 0 ]' 120; then
		echo "CARRIER DOWN $r $e"
	else
		echo "TIMEOUT carrier down $r"
	fi
	ip addr flush dev $e
	r=$((r + 1))
done
echo "GUEST DONE"
while true; do sleep 10; done
