#!/usr/bin/env bash
# deps.sh installs every prerequisite of the build, the tests and the lab on a
# Debian bookworm machine, as root. It is idempotent: a second run only checks
# stamps and returns in seconds.
#
#   apt packages      installed with apt-get when missing; QEMU 10 for the
#                     lab from bookworm-backports
#   Go tools          pinned versions, built into $CACHE/bin (and CNI plugins
#                     into $CACHE/cni/bin)
#   guest kernels     Debian's linux-image-amd64 6.12 from bookworm-backports
#                     (the lab: has 9p; its nested KVM froze far less under
#                     QEMU's SVM emulation than 6.1's) and -cloud-amd64 6.1
#                     (nested guests), downloaded and unpacked under
#                     $CACHE/kernel/<flavour>, never installed in /boot;
#                     the microVM guest kernel built from linux-source-6.1
#                     with agent/kernel/microvm.config ($CACHE/kernel/microvm)
#   containerd 1.6    Debian's containerd package (1.6.20), unpacked under
#                     $CACHE/containerd-1.6 for the e2e tests, never installed
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${STRATOVIRT_CACHE:-$ROOT/.cache}
BIN=$CACHE/bin
export PATH=/usr/local/go/bin:$PATH
export GOBIN=$BIN
export GOFLAGS=${GOFLAGS:-}

CONTAINERD_VERSION=v2.4.2
CRI_TOOLS_VERSION=v1.37.0
CNI_PLUGINS_VERSION=v1.10.0
DISTRIBUTION_VERSION=v3.1.2
PROTOBUF_GO_VERSION=v1.36.12
TTRPC_VERSION=v1.2.10
STATICCHECK_VERSION=v0.8.2
GOTESTSUM_VERSION=v1.13.0
KERNEL_SERIES=6.1
LAB_KERNEL_SERIES=6.12
CONTAINERD16_SERIES=1.6.20
LAB_QEMU_SERIES=10.0

APT_PACKAGES=(qemu-system-x86 qemu-utils cpio kmod lz4 e2fsprogs iproute2 busybox-static
	protobuf-compiler ca-certificates runc iptables erofs-utils gcc libc6-dev make git
	linux-source-$KERNEL_SERIES bc flex bison libelf-dev libssl-dev xz-utils)

log() { printf 'deps: %s\n' "$*" >&2; }

need_root() {
	if [ "$(id -u)" != 0 ]; then
		log "must run as root to install apt packages: $*"
		exit 1
	fi
}

install_apt() {
	local missing=()
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	need_root "${missing[*]}"
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# install_lab_qemu puts QEMU 10 from bookworm-backports in place of
# bookworm's 7.2 for the lab. Under 7.2's TCG SVM emulation the lab wedged
# now and then: both vCPU threads spun on an interrupt they could not
# deliver (seen with gdb) and the lab kernel reported soft lockups for
# minutes. QEMU 10 also boots the lab in about a third of the time.
install_lab_qemu() {
	local v
	v=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
	if [ -n "$v" ] && dpkg --compare-versions "$v" ge "1:$LAB_QEMU_SERIES"; then
		return 0
	fi
	need_root "qemu-system-x86 from bookworm-backports"
	log "apt-get install -t bookworm-backports qemu-system-x86 (have ${v:-none})"
	export DEBIAN_FRONTEND=noninteractive
	ensure_backports
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
}

# ensure_backports adds bookworm-backports to apt's sources (the caller
# runs apt-get update).
ensure_backports() {
	if [ ! -f /etc/apt/sources.list.d/bookworm-backports.list ]; then
		echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/bookworm-backports.list
	fi
}

# go_tool NAME VERSION PKG...: go install PKG@VERSION unless the stamp says so.
go_tool() {
	local name=$1 version=$2
	shift 2
	local stamp=$CACHE/stamps/$name
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
		return 0
	fi
	log "go install $name $version"
	local p
	for p in "$@"; do
		go install "$p@$version"
	done
	mkdir -p "$CACHE/stamps"
	echo "$version" >"$stamp"
}

install_critest() {
	local stamp=$CACHE/stamps/critest
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$CRI_TOOLS_VERSION" ] && [ -x "$BIN/critest" ]; then
		return 0
	fi
	log "build critest $CRI_TOOLS_VERSION"
	local src
	src=$(go mod download -json "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	local tmp
	tmp=$(mktemp -d)
	cp -r "$src/." "$tmp/"
	chmod -R u+w "$tmp"
	(cd "$tmp" && go test -c -o "$BIN/critest" ./cmd/critest)
	rm -rf "$tmp"
	mkdir -p "$CACHE/stamps"
	echo "$CRI_TOOLS_VERSION" >"$stamp"
}

install_cni() {
	local stamp=$CACHE/stamps/cni
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$CNI_PLUGINS_VERSION" ]; then
		return 0
	fi
	log "go install CNI plugins $CNI_PLUGINS_VERSION"
	mkdir -p "$CACHE/cni/bin"
	local m=github.com/containernetworking/plugins/plugins
	GOBIN=$CACHE/cni/bin go install "$m/main/bridge@$CNI_PLUGINS_VERSION" "$m/ipam/host-local@$CNI_PLUGINS_VERSION" \
		"$m/main/loopback@$CNI_PLUGINS_VERSION" "$m/meta/portmap@$CNI_PLUGINS_VERSION"
	mkdir -p "$CACHE/stamps"
	echo "$CNI_PLUGINS_VERSION" >"$stamp"
}

# install_kernel FLAVOUR SERIES [SUITE]: FLAVOUR is "" for the standard
# kernel, "cloud-" for cloud. Resolve the newest linux-image-SERIES…-
# <flavour>amd64 that the metapackage of SUITE (default: the release's
# own) depends on, download it, unpack it with its modules uncompressed
# (the lab's busybox insmod reads plain .ko files) and run depmod on it.
install_kernel() {
	local flavour=$1 series=$2 suite=${3:-} dir=$CACHE/kernel/${1}amd64
	if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$series" ]; then
		return 0
	fi
	local meta=linux-image-${flavour}amd64 pkg resolve
	resolve() {
		local m=$meta v
		if [ -n "$suite" ]; then
			v=$(apt-cache madison "$meta" 2>/dev/null | awk -v s="$suite" '$0 ~ s { print $3; exit }')
			[ -n "$v" ] || return 0
			m="$meta=$v"
		fi
		apt-cache depends "$m" 2>/dev/null | sed -n "s/^  Depends: \(linux-image-${series}[^ ]*\)$/\1/p" | head -n1
	}
	pkg=$(resolve)
	if [ -z "$pkg" ]; then
		need_root "apt-get update to find $meta"
		[ -z "$suite" ] || ensure_backports
		apt-get update -qq
		pkg=$(resolve)
	fi
	[ -n "$pkg" ] || { log "cannot resolve a $series kernel package for $meta ${suite:+in $suite}"; exit 1; }
	log "download and unpack $pkg"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1) || {
		apt-get update -qq
		(cd "$tmp" && apt-get download "$pkg" >/dev/null)
	}
	rm -rf "$dir"
	mkdir -p "$dir"
	dpkg-deb -x "$tmp"/*.deb "$dir"
	rm -rf "$tmp"
	find "$dir/lib/modules" -name '*.ko.xz' -print0 | xargs -0 -r xz -d
	local kver
	kver=$(ls "$dir/lib/modules")
	depmod -b "$dir" "$kver"
	ln -sf "boot/vmlinuz-$kver" "$dir/vmlinuz"
	echo "$kver" >"$dir/version"
	echo "$series" >"$dir/.complete"
}

# install_microvm_kernel builds the guest kernel `make guest` uses
# (agent/kernel: every driver built in, no modules) from Debian's
# linux-source-6.1 into $CACHE/kernel/microvm. The stamp is the source
# package's version and a hash of the config fragment and the build script,
# so editing either rebuilds. About 6 minutes on two cores.
install_microvm_kernel() {
	local dir=$CACHE/kernel/microvm src_pkg=linux-source-$KERNEL_SERIES
	local want
	want="$(dpkg-query -W -f='${Version}' "$src_pkg" 2>/dev/null) $(cat "$ROOT/agent/kernel/microvm.config" "$ROOT/agent/kernel/build.sh" | sha256sum | cut -c1-16)"
	if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$want" ]; then
		return 0
	fi
	local tarball=/usr/src/$src_pkg.tar.xz
	[ -f "$tarball" ] || { log "missing $tarball (apt package $src_pkg)"; exit 1; }
	log "build the microVM guest kernel from $src_pkg ($(dpkg-query -W -f='${Version}' "$src_pkg"))"
	local src=$CACHE/kernel/src
	rm -rf "$src" "$dir"
	mkdir -p "$src"
	tar -xJf "$tarball" -C "$src" --strip-components=1
	"$ROOT/agent/kernel/build.sh" "$src" "$dir"
	# The source and object trees are 1.6 GB; keep the results only.
	rm -rf "$src" "$dir/build"
	echo "$want" >"$dir/.complete"
}

# install_containerd16: Debian's containerd 1.6 (containerd, ctr,
# containerd-shim-runc-v2 under $CACHE/containerd-1.6/usr/bin), the older
# containerd the shim must keep working with (plain-address start reply,
# task API v2).
install_containerd16() {
	local dir=$CACHE/containerd-1.6 stamp=$CACHE/stamps/containerd-1.6
	if [ -f "$stamp" ] && [ -x "$dir/usr/bin/containerd" ]; then
		return 0
	fi
	log "download and unpack Debian's containerd $CONTAINERD16_SERIES"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download containerd >/dev/null 2>&1) || {
		need_root "apt-get update to find containerd"
		apt-get update -qq
		(cd "$tmp" && apt-get download containerd >/dev/null)
	}
	local ver
	ver=$(dpkg-deb -f "$tmp"/containerd_*.deb Version)
	case $ver in
	"$CONTAINERD16_SERIES"*) ;;
	*) log "containerd package is $ver, want $CONTAINERD16_SERIES"; rm -rf "$tmp"; exit 1 ;;
	esac
	rm -rf "$dir"
	mkdir -p "$dir" "$CACHE/stamps"
	dpkg-deb -x "$tmp"/containerd_*.deb "$dir"
	rm -rf "$tmp"
	echo "$ver" >"$stamp"
}

install_apt
install_lab_qemu
mkdir -p "$BIN"
go_tool containerd "$CONTAINERD_VERSION" \
	github.com/containerd/containerd/v2/cmd/containerd \
	github.com/containerd/containerd/v2/cmd/ctr \
	github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
go_tool crictl "$CRI_TOOLS_VERSION" sigs.k8s.io/cri-tools/cmd/crictl
# local image registry for tests/cri and critest (serves on loopback)
go_tool registry "$DISTRIBUTION_VERSION" github.com/distribution/distribution/v3/cmd/registry
install_critest
install_cni
go_tool protoc-gen-go "$PROTOBUF_GO_VERSION" google.golang.org/protobuf/cmd/protoc-gen-go
go_tool protoc-gen-go-ttrpc "$TTRPC_VERSION" github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc
go_tool staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck
# runs the lab packages and reruns a failed test once (make test)
go_tool gotestsum "$GOTESTSUM_VERSION" gotest.tools/gotestsum
install_kernel "" "$LAB_KERNEL_SERIES" bookworm-backports
install_kernel "cloud-" "$KERNEL_SERIES"
install_microvm_kernel
install_containerd16
log "ok: tools in $BIN, kernels in $CACHE/kernel"
