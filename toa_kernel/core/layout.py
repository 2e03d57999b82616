"""Names fixed by the vendor's source and by CentOS 6: file names, system paths."""

from __future__ import annotations

import re

# The vendor's real-server kernel source: tarball name and its top directory.
TARBALL_NAME = "Linux-2.6.32-220.23.1.el6.x86_64.rs.src.tar.gz"
TREE_NAME = "linux-2.6.32-220.23.1.el6.x86_64.rs"
# The kernel version of that source (VERSION.PATCHLEVEL.SUBLEVEL of its Makefile).
KERNEL_VERSION = "2.6.32"
# The kernel keeps its release (uname -r) in a field of this many bytes (__NEW_UTS_LEN).
UTS_LEN = 64

# A kernel release name (``uname -r``): safe in a file name, a shell line and grub.conf.
RELEASE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")

# Inside a kernel tree.
TOA_HEADER = "net/toa/toa.h"
TOA_MODULE_OBJECT = "net/toa/toa.ko"
BZIMAGE = "arch/x86/boot/bzImage"

# System paths (always resolved under a Root).
BOOT_DIR = "/boot"
GRUB_CONF = "/boot/grub/grub.conf"
MENU_LST = "/boot/grub/menu.lst"
ETC_GRUB_CONF = "/etc/grub.conf"
MODULES_DIR = "/lib/modules"
INSTALLKERNEL = "/sbin/installkernel"
MODULES_SCRIPT = "/etc/sysconfig/modules/toa.modules"
CRON_FILE = "/etc/cron.d/toa"
RC_LOCAL = "/etc/rc.d/rc.local"
# The lock a task that changes the system holds (under the root, like everything else).
SYSTEM_LOCK = "/var/lock/toa-kernel.lock"
SYSTEM_LOCK_NAME = "toa-kernel.lock"
PROC_OSRELEASE = "/proc/sys/kernel/osrelease"
PROC_CMDLINE = "/proc/cmdline"
PROC_MODULES = "/proc/modules"
PROC_TOA_STATS = "/proc/net/toa_stats"
