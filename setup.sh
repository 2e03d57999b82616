#!/usr/bin/env bash
# Install everything toa-kernel and its test suite need on a Debian 12 machine
# (apt-get packages and the Python package with its test extras), then, with
# --demo, run the demo pipeline on the sample tree into a sandbox root.
#
#   ./setup.sh --demo     install, then `invoke demo`
#   ./setup.sh            install only (what CI does before the tests)
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
    # build and install steps: the kernel's own make, compilers, patch, depmod
    gcc make perl patch binutils kmod ccache libmagic1 curl pigz xz-utils
    # the boot lab: QEMU, GRUB legacy 0.97, a busybox initramfs, disk-image tools
    qemu-system-x86 grub-legacy busybox-static fdisk e2fsprogs cpio
    # kernels 3.0+ (out-of-tree module): real Kbuild headers to build against
    linux-headers-amd64
    # remote systems: a real OpenSSH server, sudo and flock for the SSH tests
    openssh-server openssh-client sudo util-linux
)

if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
else
    echo "setup.sh: not root, skipping apt-get (need: ${APT_PACKAGES[*]})" >&2
fi

# Debian's own python3 refuses system-wide pip installs (PEP 668) unless told.
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m pip install -q -e '.[test]'

if [ "${1:-}" = "--demo" ]; then
    exec python3 -m invoke demo
fi
