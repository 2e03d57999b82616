"""The lab's disk image: a staging copy of ``ROOT/boot`` written into an MBR disk.

Staging copies ``/boot`` with every kernel file replaced by the real kernel and
every initramfs by the lab initramfs of its release. Its grub.conf gets the
lab-only edits (serial console, no menu wait, no splash image, the kernel
arguments the lab needs), ``menu.lst`` links to it as on CentOS, and GRUB's real
stage files sit beside it. When grub.conf's paths say ``/boot/vmlinuz-…`` the
partition is a root filesystem holding ``boot/``; otherwise it is ``/boot``
itself. The image is made without loop devices or mounts: ``truncate``,
``sfdisk`` and ``mke2fs -d`` at the partition's offset.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toa_kernel.boot.grubconf import parse
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.layout import BOOT_DIR, GRUB_CONF
from toa_kernel.core.plan import unified_diff
from toa_kernel.lab.bootconf import BootConf
from toa_kernel.lab.initramfs import build_initramfs
from toa_kernel.lab.ownkernel import build_system_initramfs, own_kernel_files
from toa_kernel.lab.tools import STAGE_FILES, grub_stage_dir, program
from toa_kernel.system.rootfs import Root

LAB_KERNEL_ARGS = ("console=ttyS0", "panic=-1")
LAB_HEADER = (
    "# boot lab: serial console, no menu wait (lab-only edits)\n"
    "serial --unit=0 --speed=115200\n"
    "terminal --timeout=0 serial\n"
)
COMMENTED_OUT = ("splashimage", "serial", "terminal", "gfxmenu")
KERNEL_NAME_RE = re.compile(r"^vmlinuz-.+")
INITRAMFS_NAME_RE = re.compile(r"^(?:initramfs|initrd)-(?P<release>.+?)(?:kdump)?\.img$")
SECTOR = 512
PARTITION_SECTORS = 2048  # partitions start on 1 MiB boundaries, as fdisk does
MIB = 1024 * 1024
SKIPPED = ("lost+found",)


def lab_grub_conf(text: str, kernel_args: Iterable[str] = LAB_KERNEL_ARGS) -> str:
    """grub.conf with the lab-only edits; entries, defaults and arguments otherwise unchanged."""
    extra = " ".join(kernel_args)
    config = parse(text)
    lines = list(config.lines)
    newline = config.newline
    for command in config.commands:
        span = range(command.first, command.last + 1)
        if command.keyword in COMMENTED_OUT:
            for number in span:
                lines[number] = "# (lab) " + lines[number]
        elif command.keyword == "timeout":
            replace_lines(lines, span, command.with_value("0", newline))
        elif command.keyword == "kernel" and extra:
            replace_lines(lines, span, command.with_value(f"{command.value} {extra}", newline))
    return LAB_HEADER + "".join(lines)


def replace_lines(lines: list[str], span: range, text: str) -> None:
    """Put ``text`` in place of the physical lines ``span`` (a logical line)."""
    lines[span[0]] = text
    for number in span[1:]:
        lines[number] = ""


@dataclass
class Staged:
    """The staging tree and what was put in it."""

    stage: Path
    partition: int
    boot_on_root: bool
    kernels: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # own kernels booted as they are -> release
    initramfs: dict[str, str] = field(default_factory=dict)
    omitted: list[str] = field(default_factory=list)
    lab_edits: str = ""

    @property
    def boot(self) -> Path:
        """Where ``/boot`` lives in the staging tree."""
        return self.stage / "boot" if self.boot_on_root else self.stage


def boot_file_roles(conf: BootConf, boot_on_root: bool) -> tuple[set[str], dict[str, str]]:
    """Paths under ``/boot`` (relative) that grub.conf uses as kernels, and initrds -> release."""

    def relative(path: str) -> str:
        path = path.lstrip("/")
        return path[len("boot/") :] if boot_on_root and path.startswith("boot/") else path

    kernels = {relative(e.kernel_path) for e in conf.entries if e.kernel_path}
    initrds = {relative(e.initrd_path): e.release for e in conf.entries if e.initrd_path and e.release}
    return kernels, {k: v for k, v in initrds.items() if v}


def stage_boot(
    root: Root,
    stage: Path,
    conf: BootConf,
    conf_text: str,
    kernel: Path,
    *,
    omit: Iterable[str] = (),
    scratch: Path,
    own_kernels: bool = False,
    make_initramfs: Callable[[str, Path], Path] = build_initramfs,
    kernel_args: Iterable[str] = LAB_KERNEL_ARGS,
    as_is: Iterable[str] = (),
) -> Staged:
    """Copy ``ROOT/boot`` into ``stage`` with the lab's kernel, initramfs and grub.conf.

    ``omit``: system paths left out; ``as_is``: initramfs paths copied as they are
    (not bootable: the kernel finds no root and panics); ``kernel_args``: what the lab
    appends to every kernel line; ``make_initramfs(release, path)`` writes the
    initramfs that stands in for the entry of ``release`` (the probe passes its own).
    With ``own_kernels``, kernel files that are real boot images stay as they are and
    their initramfs carries the root's modules and boot hooks (``ownkernel``).
    """
    boot_dir = root.resolve(BOOT_DIR)
    if not boot_dir.is_dir():
        raise UserError(f"{root.path(BOOT_DIR)} does not exist", "pass --root with a system that has /boot")
    staged = Staged(stage=stage, partition=conf.partition, boot_on_root=conf.boot_on_root)
    if stage.exists():
        shutil.rmtree(stage)
    staged.boot.mkdir(parents=True)
    kernels, initrds = boot_file_roles(conf, staged.boot_on_root)
    own = own_kernel_files(boot_dir, kernels) if own_kernels else {}
    omitted = {p.lstrip("/").removeprefix("boot/") for p in omit}
    unchanged = {p.lstrip("/").removeprefix("boot/") for p in as_is}
    made: dict[str, Path] = {}
    for source in sorted(boot_dir.rglob("*")):
        relative = source.relative_to(boot_dir).as_posix()
        if relative.split("/")[0] in SKIPPED:
            continue
        target = staged.boot / relative
        system_path = f"{BOOT_DIR}/{relative}"
        if relative in omitted:
            staged.omitted.append(system_path)
        elif source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_dir():
            target.mkdir(exist_ok=True)
        elif relative in unchanged:
            shutil.copyfile(source, target)
        elif relative in own:
            shutil.copyfile(source, target)
            staged.kept[system_path] = own[relative]
        elif relative in kernels or KERNEL_NAME_RE.match(source.name):
            shutil.copyfile(kernel, target)
            staged.kernels.append(system_path)
        elif initramfs_release(relative, source.name, initrds):
            release = initramfs_release(relative, source.name, initrds)
            assert release is not None
            if release not in made:
                output = scratch / f"initramfs-{release}.img"
                own_release = release in own.values()
                made[release] = (
                    build_system_initramfs(root, release, output)
                    if own_release
                    else make_initramfs(release, output)
                )
            shutil.copyfile(made[release], target)
            staged.initramfs[system_path] = release
        else:
            shutil.copy2(source, target, follow_symlinks=False)
    write_lab_grub(staged, conf_text, kernel_args)
    return staged


def initramfs_release(relative: str, name: str, initrds: dict[str, str]) -> str | None:
    """The release whose lab initramfs replaces this file (None: not an initramfs)."""
    if relative in initrds:
        return initrds[relative]
    match = INITRAMFS_NAME_RE.match(name)
    return match.group("release") if match else None


def write_lab_grub(staged: Staged, conf_text: str, kernel_args: Iterable[str] = LAB_KERNEL_ARGS) -> None:
    """grub.conf with the lab edits, ``menu.lst -> grub.conf``, GRUB's stage files."""
    grub_dir = staged.boot / "grub"
    grub_dir.mkdir(exist_ok=True)
    lab_text = lab_grub_conf(conf_text, kernel_args)
    conf = grub_dir / "grub.conf"
    if conf.is_symlink() or conf.exists():
        conf.unlink()
    conf.write_text(lab_text, errors="surrogateescape")
    staged.lab_edits = unified_diff(conf_text, lab_text, GRUB_CONF.lstrip("/"))
    menu = grub_dir / "menu.lst"
    if menu.is_symlink() or menu.exists():
        menu.unlink()
    menu.symlink_to("grub.conf")
    stage_dir = grub_stage_dir()
    for name in STAGE_FILES:
        target = grub_dir / name
        if target.is_symlink():
            target.unlink()
        shutil.copyfile(stage_dir / name, target)


def tree_bytes(directory: Path) -> int:
    """Bytes of the regular files under ``directory``."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def filesystem_mib(stage: Path) -> int:
    """A partition size with room for the staged files and ext2's metadata."""
    return max(32, int(tree_bytes(stage) * 1.25 / MIB) + 16)


def partition_script(partition: int, size_mib: int) -> str:
    """An sfdisk script: placeholder partitions before the boot one (for ``(hd0,Y)``, Y > 0)."""
    lines = ["label: dos"]
    for _ in range(partition):
        lines.append(f"size={PARTITION_SECTORS}, type=83")
    start = PARTITION_SECTORS * (partition + 1)
    lines.append(f"start={start}, size={size_mib * MIB // SECTOR}, type=83, bootable")
    return "\n".join(lines) + "\n"


def run_tool(command: list[str], what: str, stdin: str | None = None) -> str:
    """Run a lab tool; an EnvironmentFailure quoting its output when it fails."""
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise EnvironmentFailure(
            f"{what} failed ({Path(command[0]).name} exit {result.returncode}): {output}"
        )
    return result.stdout


def make_image(stage: Path, image: Path, partition: int = 0) -> int:
    """Write an MBR disk image whose partition ``partition`` holds ``stage`` as ext2.

    Returns the byte offset of that partition.
    """
    size_mib = filesystem_mib(stage)
    offset = PARTITION_SECTORS * (partition + 1) * SECTOR
    if image.exists():
        image.unlink()
    with open(image, "wb") as handle:
        handle.truncate(offset + size_mib * MIB)
    run_tool(
        [program("sfdisk"), "-q", str(image)],
        "partitioning the lab image",
        partition_script(partition, size_mib),
    )
    run_tool(
        [
            program("mke2fs"),
            "-q",
            "-F",
            "-t",
            "ext2",
            "-L",
            "lab-boot",
            "-d",
            str(stage),
            "-E",
            f"offset={offset}",
            str(image),
            f"{size_mib * 1024}k",
        ],
        "writing the lab filesystem",
    )
    return offset
