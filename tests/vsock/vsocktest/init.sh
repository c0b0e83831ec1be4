#!/bin/sh
# Init of the vsock test initramfs: loads the virtio, vsock and balloon
# modules of the Debian cloud kernel and runs the guest peer (echo on
# vsock port 1024, control on 1030) until the host ends the VM.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/load-modules
/vsockpeer
echo "PEER EXIT $?"
poweroff -f
sleep 30
