"""What a rollout asks of one host, through its System (here or over SSH).

Only what CentOS 6 has is used on the server: ``sha256sum``, ``tar``, ``gzip``,
``cp``, ``mv``, ``df -P``, ``uname``, ``depmod`` and the server's own
``/sbin/installkernel`` (new-kernel-pkg: dracut + grubby). Every path in a
command is a host path (the root prefix + the system path), so a sandbox root
reached over SSH works like a real server's ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from toa_kernel.boot import grubconf
from toa_kernel.boot.preflight import INITRAMFS_TO_KERNEL
from toa_kernel.core.errors import EnvironmentFailure, ToaError, UserError
from toa_kernel.core.layout import (
    BOOT_DIR,
    ETC_GRUB_CONF,
    GRUB_CONF,
    INSTALLKERNEL,
    MENU_LST,
    MODULES_DIR,
    PROC_OSRELEASE,
)
from toa_kernel.system.api import System
from toa_kernel.verify.facts import dep_modules

PROC_BOOT_ID = "/proc/sys/kernel/random/boot_id"
SAVED_DEFAULT = "/boot/grub/default"
STAGING = "/var/tmp/toa-kernel"
SERVER_TOOLS = ("sha256sum", "tar", "gzip", "cp", "mv", "df", "uname")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# depmod lives in /sbin, which a plain login's PATH may lack.
DEPMOD = 'command -v depmod >/dev/null 2>&1 || PATH="$PATH:/sbin:/usr/sbin"; exec depmod "$@"'
MISSING_TOOLS = 'for t do command -v "$t" >/dev/null 2>&1 || echo "$t"; done'


def running_release(system: System) -> str | None:
    text = system.read_text(PROC_OSRELEASE, limit=256)
    return (text or "").strip() or None


def boot_id(system: System) -> str | None:
    """This boot's id (``/proc/sys/kernel/random/boot_id``): it changes with every boot."""
    text = (system.read_text(PROC_BOOT_ID, limit=128) or "").strip()
    return text or None


def machine(system: System) -> str:
    return system.run(["uname", "-m"], check=True).out.strip()


def arch_matches(bundle_arch: str, host_arch: str) -> bool:
    """``x86_64`` runs only on x86_64; a 32-bit (i686) kernel on any i386..i686."""
    if bundle_arch == "x86_64":
        return host_arch == "x86_64"
    return bool(re.fullmatch(r"i[3-6]86", host_arch))


def missing_tools(system: System, tools: Iterable[str] = SERVER_TOOLS) -> list[str]:
    result = system.run(["sh", "-c", MISSING_TOOLS, "toa", *tools], check=True)
    return result.out.split()


def sha256(system: System, system_path: str) -> str | None:
    """``sha256sum`` of a file on the host (None when it is not there)."""
    if system.stat(system_path) is None:
        return None
    result = system.run(["sha256sum", system.host_path(system_path)], check=True)
    digest = result.out.split(" ", 1)[0].strip()
    if not SHA_RE.match(digest):
        raise EnvironmentFailure(f"sha256sum on {system.label} answered {result.out[:80]!r}")
    return digest


def sha256_many(system: System, system_paths: list[str]) -> dict[str, str]:
    """sha256 of several files in one command (paths that are missing are left out)."""
    if not system_paths:
        return {}
    script = 'for f do [ -f "$f" ] && sha256sum "$f"; done; exit 0'
    hosts = {system.host_path(p): p for p in system_paths}
    result = system.run(["sh", "-c", script, "toa", *hosts], check=True)
    found: dict[str, str] = {}
    for line in result.out.splitlines():
        digest, _, name = line.partition("  ")
        if name in hosts and SHA_RE.match(digest):
            found[hosts[name]] = digest
    return found


def initramfs_estimate(system: System, vmlinuz_size: int) -> int:
    """The largest initramfs already in /boot, or a multiple of the kernel's size."""
    sizes = [INITRAMFS_TO_KERNEL * vmlinuz_size]
    try:
        names = system.listdir(BOOT_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return sizes[0]
    for name in names:
        if re.fullmatch(r"(initramfs|initrd)-.+\.img", name):
            st = system.stat(f"{BOOT_DIR}/{name}")
            if st is not None and st.kind == "file":
                sizes.append(st.size)
    return max(sizes)


def grub_conf_problem(
    system: System, release: str, kernel_args: tuple[str, ...], initrd_name: str
) -> tuple[str | None, ToaError | None]:
    """(system path of grub.conf, the problem with it): found, readable, the TOA entry can be made
    the default there (the edit install-kernel will make, computed on the file as it is), writable."""
    for candidate in (GRUB_CONF, ETC_GRUB_CONF, MENU_LST):
        try:
            real = system.resolve(candidate)
        except UserError as exc:
            return None, exc
        st = system.stat(real)
        if st is None or st.kind != "file":
            continue
        try:
            text = system.read_bytes(real).decode("utf-8", "surrogateescape")
            saved_text = system.read_text(SAVED_DEFAULT, limit=64)
            saved = grubconf.parse_saved_default(saved_text) if saved_text else None
            grubconf.edit_for_release(
                text, release, kernel_args=kernel_args, initrd_name=initrd_name, saved_default=saved
            )
        except ToaError as exc:
            return real, UserError(f"{real} on {system.label}: {exc.message}", exc.fix)
        except (OSError, ValueError) as exc:
            return real, UserError(f"{real} on {system.label} cannot be read or edited: {exc}")
        if not st.mode & 0o200:
            return real, UserError(
                f"{real} on {system.label} is read-only (mode {st.mode:04o})",
                f"make it writable for root (chmod u+w {real}) if it may be changed",
            )
        return real, None
    return None, UserError(
        f"no GRUB legacy configuration on {system.label} ({GRUB_CONF}, {ETC_GRUB_CONF})",
        "the rollout installs CentOS 6 / RHEL 6 kernels booted by GRUB legacy; check the host and its root",
    )


def installkernel_problem(system: System) -> ToaError | None:
    st = system.stat(INSTALLKERNEL)
    if st is None or st.kind != "file" or not st.mode & 0o111:
        return UserError(
            f"{system.label} has no executable {INSTALLKERNEL}, so no initramfs and boot entry would be made",
            "install the server's installkernel (yum install dracut grubby)",
        )
    return None


def modules_dir(release: str) -> str:
    return f"{MODULES_DIR}/{release}"


def run_depmod(system: System, release: str, system_map: str) -> None:
    """``depmod -a -b ROOT -F System.map R`` with the server's own depmod (its own index format)."""
    argv = ["sh", "-c", DEPMOD, "depmod", "-a", "-b", system.host_path("/"), "-F", system_map, release]
    system.run(argv, check=True)


def dep_lists_toa(system: System, release: str) -> bool:
    text = system.read_text(f"{modules_dir(release)}/modules.dep")
    return text is not None and "toa.ko" in dep_modules(text)
