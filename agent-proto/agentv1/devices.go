package agentv1

// RuncDevice is the guest's block device of the runc image (the guest
// image's runc.erofs, an erofs of runc and its libraries): the shim
// attaches the image as the VM's first virtio-pmem device, and the agent
// mounts it read-only on /usr at boot.
const RuncDevice = "/dev/pmem0"
