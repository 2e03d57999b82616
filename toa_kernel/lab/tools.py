"""The programs the boot lab runs, and the Debian packages that provide them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from toa_kernel.core.errors import ToolMissing

# program -> Debian package
PROGRAMS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "grub": "grub-legacy",
    "busybox": "busybox-static",
    "sfdisk": "fdisk",
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "apt-cache": "apt",
}
STAGE_DIRS = (Path("/usr/lib/grub/x86_64-pc"), Path("/usr/lib/grub/i386-pc"))
STAGE_FILES = ("stage1", "stage2", "e2fs_stage1_5")
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def install_line(*packages: str) -> str:
    """The command that installs the lab's packages."""
    return f"apt-get install -y --no-install-recommends {' '.join(packages)}"


def which(program: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories (grub, mke2fs)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which(program, path=path)


def program(name: str) -> str:
    """The full path of a lab program; ``ToolMissing`` naming its package if absent."""
    found = which(name)
    if not found:
        raise ToolMissing(name, f"install it: {install_line(PROGRAMS.get(name, name))}")
    return found


def grub_stage_dir() -> Path:
    """Where grub-legacy keeps stage1, stage2 and e2fs_stage1_5."""
    for directory in STAGE_DIRS:
        if all((directory / name).is_file() for name in STAGE_FILES):
            return directory
    raise ToolMissing("grub stage files", f"install GRUB legacy 0.97: {install_line('grub-legacy')}")


def static_busybox() -> Path:
    """A statically linked busybox (a dynamic one cannot run alone in an initramfs)."""
    import magic

    path = Path(program("busybox")).resolve()
    if "statically linked" not in magic.from_file(str(path)):
        raise ToolMissing(
            f"static busybox ({path} is dynamically linked)",
            f"install the static build: {install_line('busybox-static')}",
        )
    return path


def missing_programs() -> dict[str, str]:
    """Lab programs (or grub's stage files) that are absent -> their Debian package."""
    missing = {name: pkg for name, pkg in PROGRAMS.items() if not which(name)}
    if not any(all((d / n).is_file() for n in STAGE_FILES) for d in STAGE_DIRS):
        missing["grub stage files"] = "grub-legacy"
    return missing


def missing_packages() -> list[str]:
    """Debian packages the lab needs that are not installed, in a stable order."""
    return list(dict.fromkeys(missing_programs().values()))


def require_lab_tools() -> None:
    """Raise ``ToolMissing`` for the first missing program, with the apt-get line for all."""
    missing = missing_programs()
    if missing:
        first = next(iter(missing))
        packages = list(dict.fromkeys(missing.values()))
        raise ToolMissing(first, f"install the boot lab's packages: {install_line(*packages)}")
    static_busybox()


def lab_available() -> bool:
    """True when every lab program is installed (``invoke demo`` runs the lab then)."""
    return not missing_packages()
