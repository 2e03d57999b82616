"""What the lab needs to know about a grub.conf: entries, their files, the partition.

Read with the project's GRUB legacy parser (``toa_kernel.boot.grubconf``). Paths in
grub.conf are relative to the partition named by ``root (hdX,Y)``: ``/vmlinuz-…``
when ``/boot`` is its own partition, ``/boot/vmlinuz-…`` when it is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toa_kernel.boot.grubconf import parse, release_of_image
from toa_kernel.core.errors import UserError

DEVICE_RE = re.compile(r"^\s*\((?P<disk>[a-z]+\d+)(?:,(?P<part>\d+))?[^)]*\)")
MAX_PRIMARY = 4


def strip_device(path: str) -> str:
    """``(hd0,0)/vmlinuz-R`` -> ``/vmlinuz-R``."""
    return DEVICE_RE.sub("", path or "").strip()


def partition_of(device: str) -> int | None:
    """``(hd0,1)`` -> 1; ``None`` when no partition is named."""
    match = DEVICE_RE.match(device or "")
    if not match or match.group("part") is None:
        return None
    return int(match.group("part"))


@dataclass(frozen=True)
class BootEntry:
    """One ``title`` block: its root device, kernel and initrd as written."""

    index: int
    title: str
    root: str = ""
    kernel: str = ""
    initrd: str = ""

    @property
    def kernel_path(self) -> str:
        return strip_device(self.kernel)

    @property
    def initrd_path(self) -> str:
        return strip_device(self.initrd)

    @property
    def release(self) -> str | None:
        return release_of_image(self.kernel_path) if self.kernel_path else None

    @property
    def partition(self) -> int | None:
        named = partition_of(self.kernel) if self.kernel.strip().startswith("(") else None
        return named if named is not None else partition_of(self.root)


@dataclass
class BootConf:
    """The parts of a grub.conf that decide what boots."""

    entries: list[BootEntry] = field(default_factory=list)
    default_index: int | None = 0
    fallback: list[int] = field(default_factory=list)

    def entry(self, index: int | None) -> BootEntry | None:
        if index is None or not 0 <= index < len(self.entries):
            return None
        return self.entries[index]

    @property
    def default_entry(self) -> BootEntry | None:
        return self.entry(self.default_index)

    @property
    def fallback_entry(self) -> BootEntry | None:
        return self.entry(self.fallback[0]) if self.fallback else None

    @property
    def reference_entry(self) -> BootEntry | None:
        """The entry that decides the layout: the default one, else the first with a kernel."""
        entry = self.default_entry
        if entry is not None and entry.kernel_path:
            return entry
        return next((e for e in self.entries if e.kernel_path), None)

    @property
    def boot_on_root(self) -> bool:
        """True when kernel paths say ``/boot/…``: the partition is the root filesystem."""
        entry = self.reference_entry
        return bool(entry and entry.kernel_path.startswith("/boot/"))

    @property
    def partition(self) -> int:
        """The partition number (``Y`` of ``(hd0,Y)``) the lab's disk puts ``/boot`` on."""
        entry = self.reference_entry
        number = entry.partition if entry else None
        if number is None:
            number = next((e.partition for e in self.entries if e.partition is not None), 0)
        if number >= MAX_PRIMARY:
            raise UserError(
                f"grub.conf boots from partition (hd0,{number}), a logical partition the lab does not build",
                "the lab builds primary partitions (hd0,0) to (hd0,3) only",
            )
        return number


def read_boot_conf(text: str) -> BootConf:
    """Parse grub.conf text into the lab's view of it."""
    config = parse(text)
    entries = [
        BootEntry(
            index=entry.index,
            title=entry.title,
            root=entry.root or "",
            kernel=entry.kernel or "",
            initrd=entry.initrd or "",
        )
        for entry in config.entries
    ]
    if not entries:
        raise UserError(
            "grub.conf has no boot entries (no 'title' lines)", "run 'invoke install-kernel' first"
        )
    default = config.default
    default_index = 0 if default is None else default if isinstance(default, int) else None
    return BootConf(entries, default_index, list(config.fallbacks))
