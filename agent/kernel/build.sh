#!/usr/bin/env bash
# build.sh SRC OUT builds the microVM guest kernel from the Linux source tree
# SRC (Debian's linux-source-6.1) with microvm.config on top of allnoconfig,
# out of tree in OUT/build, and lays it out as an unpacked kernel package
# for agent/guestimage -kernel-dir:
#
#   OUT/boot/vmlinuz-<release>   bzImage
#   OUT/vmlinux                  ELF vmlinux (PVH entry)
#   OUT/lib/modules/<release>/   empty modules.dep: every driver is built in
#   OUT/config                   the resolved .config
#
# It fails when an option the fragment sets did not survive Kconfig's
# dependency resolution, so a fragment that silently loses a driver cannot
# produce a kernel.
set -euo pipefail

src=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
frag=$here/microvm.config
obj=$out/build
mkdir -p "$obj"

make -s -C "$src" O="$obj" KCONFIG_ALLCONFIG="$frag" LOCALVERSION=-stratovirt allnoconfig

# Every CONFIG_X=y|n|value of the fragment must be what .config ends with.
bad=0
while IFS= read -r line; do
	case $line in
	CONFIG_*=n)
		sym=${line%%=*}
		if grep -q "^$sym=" "$obj/.config"; then
			echo "build.sh: $sym is set, the fragment turns it off" >&2
			bad=1
		fi
		;;
	CONFIG_*=*)
		if ! grep -qxF "$line" "$obj/.config"; then
			echo "build.sh: $line did not survive Kconfig (have: $(grep "^${line%%=*}=" "$obj/.config" || echo unset))" >&2
			bad=1
		fi
		;;
	esac
done <"$frag"
[ "$bad" = 0 ] || exit 1

make -s -C "$src" O="$obj" LOCALVERSION=-stratovirt -j"$(nproc)" bzImage vmlinux
release=$(make -s -C "$src" O="$obj" LOCALVERSION=-stratovirt kernelrelease)
mkdir -p "$out/boot" "$out/lib/modules/$release"
cp "$obj/arch/x86/boot/bzImage" "$out/boot/vmlinuz-$release"
cp "$obj/vmlinux" "$out/vmlinux"
cp "$obj/.config" "$out/config"
: >"$out/lib/modules/$release/modules.dep"
: >"$out/lib/modules/$release/modules.builtin"
echo "$release" >"$out/release"
