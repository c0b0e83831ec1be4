#!/bin/sh
# Init of the boot tests' busybox initramfs: marks boot complete, reports
# what the guest sees and ends the VM the way the command line asks.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# Boot marker: value 123 on port 0x3f0, timed by the VMM (the cloud
# kernel has no /dev/port, so a tiny static program does the port write).
/bin/boot-marker
echo "NPROC=$(nproc)"
echo "ONLINE=$(cat /sys/devices/system/cpu/online)"
grep MemTotal /proc/meminfo
for d in /sys/firmware/memmap/*; do
	echo "E820 $(cat "$d/start") $(cat "$d/end") $(cat "$d/type")"
done
dmesg | grep -E 'BIOS-e820|ACPI: (RSDP|XSDT|FACP|APIC|DSDT)' | sed 's/^\[[^]]*\] //'
action=poweroff
for arg in $(cat /proc/cmdline); do
	case "$arg" in test.action=*) action=${arg#test.action=} ;; esac
done
echo "ACTION=$action"
case "$action" in
reboot) reboot -f ;;
read)
	echo READY
	read -r line
	echo "GOT=$line"
	poweroff -f
	;;
sleep) sleep 600 ;;
panic) echo c >/proc/sysrq-trigger ;;
*) poweroff -f ;;
esac
sleep 30
