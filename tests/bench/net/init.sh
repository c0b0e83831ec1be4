#!/bin/sh
# Init of the network benchmark's guest: loads the virtio-net modules,
# gives the NIC with MAC test.mac the address test.ip/24 and runs the
# benchmark server; the host drives every measurement.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in virtio_ring virtio virtio_mmio failover net_failover virtio_net; do
	insmod /$m.ko || echo "INSMOD $m failed"
done
mac=; ip=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	test.mac=*) mac=${arg#test.mac=} ;;
	test.ip=*) ip=${arg#test.ip=} ;;
	esac
done
ip link set lo up
dev=
for i in $(seq 1 50); do
	for d in /sys/class/net/eth*; do
		[ "$(cat $d/address 2>/dev/null)" = "$mac" ] && dev=${d##*/}
	done
	[ -n "$dev" ] && break
	sleep 0.1
done
if [ -z "$dev" ]; then
	echo "NIC $mac missing"
	poweroff -f
fi
ip addr add $ip/24 dev $dev
ip link set $dev up
echo "NIC $mac $dev $ip"
/benchtool serve 0.0.0.0:5201
echo "BENCHTOOL EXITED"
poweroff -f
sleep 30
