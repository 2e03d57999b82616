"""The lab initramfs: busybox-static and an ``/init`` that reports and powers off.

One initramfs per release: its ``/init`` prints ``TOA-LAB release=RELEASE`` (the
release of the entry whose initramfs GRUB loaded: the real kernel in the image
has its own, different release), ``uname -r``, ``/proc/cmdline`` and the boot's
``/proc/sys/kernel/random/boot_id`` (``bootid=``, new on every boot), then
``TOA-LAB end`` and ``poweroff -f``. Packed with ``busybox cpio -o -H newc`` and
gzip, as dracut's images are.
"""

from __future__ import annotations

import gzip
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.lab.console import MARK
from toa_kernel.lab.tools import static_busybox

INIT_TEMPLATE = """#!/bin/busybox sh
# Boot lab: report which entry booted, then power off.
/bin/busybox mount -t proc proc /proc
echo "{mark} release="{release}
echo "{mark} uname=$(/bin/busybox uname -r)"
echo "{mark} cmdline=$(/bin/busybox cat /proc/cmdline)"
echo "{mark} bootid=$(/bin/busybox cat /proc/sys/kernel/random/boot_id)"
echo "{mark} end"
/bin/busybox sync
/bin/busybox poweroff -f
"""
RELEASE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+~-")


def init_script(release: str) -> str:
    """The ``/init`` of the initramfs for ``release``."""
    if not release or not set(release) <= RELEASE_CHARS:
        raise UserError(
            f"{release!r} is not a kernel release the lab can mark", "check grub.conf's file names"
        )
    return INIT_TEMPLATE.format(mark=MARK, release=shlex.quote(release))


def stage_initramfs(release: str, directory: Path, busybox: Path) -> None:
    """Write the initramfs's files for ``release`` into ``directory``."""
    for name in ("bin", "proc", "dev", "sys"):
        (directory / name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, directory / "bin" / "busybox")
    init = directory / "init"
    init.write_text(init_script(release))
    init.chmod(0o755)


def pack(directory: Path, busybox: Path) -> bytes:
    """``find . | busybox cpio -o -H newc`` of ``directory``, uncompressed."""
    names = sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))
    listing = "\n".join([".", *names]) + "\n"
    result = subprocess.run(
        [str(busybox), "cpio", "-o", "-H", "newc"],
        cwd=directory,
        input=listing.encode(),
        capture_output=True,
    )
    if result.returncode != 0:
        raise EnvironmentFailure(f"busybox cpio failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def build_initramfs(release: str, output: Path, busybox: Path | None = None) -> Path:
    """Write the gzip-compressed lab initramfs for ``release`` to ``output``."""
    busybox = busybox or static_busybox()
    with tempfile.TemporaryDirectory(prefix="initramfs-") as scratch:
        stage_initramfs(release, Path(scratch), busybox)
        archive = pack(Path(scratch), busybox)
    output.write_bytes(gzip.compress(archive, compresslevel=6, mtime=0))
    return output
