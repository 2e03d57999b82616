"""Read a kernel module's ``.modinfo`` section in Python (what ``modinfo`` prints).

A ``.ko`` is an ELF relocatable object (``e_type`` ET_REL). Its ``.modinfo``
section holds NUL-separated ``key=value`` strings: ``name=toa``,
``vermagic=3.10.0-1160.el7.x86_64 SMP mod_unload modversions``, ``license=GPL``.
The first word of ``vermagic`` is the kernel release the module was built for;
the kernel refuses to load a module whose vermagic differs from its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import read_bytes

ELF_MAGIC = b"\x7fELF"
# A kernel module with debug information is a few MiB; a larger file is not one.
MAX_MODULE_BYTES = 256 * 1024 * 1024
ET_REL = 1
SHN_XINDEX = 0xFFFF
ELF_TYPES = {0: "none", 1: "relocatable", 2: "executable", 3: "shared object", 4: "core"}
MACHINES = {3: "i386", 62: "x86-64", 183: "aarch64", 40: "arm", 243: "riscv", 21: "ppc64", 22: "s390"}


@dataclass(frozen=True)
class ModuleInfo:
    """What a ``.ko`` says about itself."""

    path: Path
    elf_type: int
    machine: str
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str) -> str:
        values = self.fields.get(key) or [""]
        return values[0]

    @property
    def name(self) -> str:
        return self.get("name") or self.path.name.removesuffix(".ko").replace("-", "_")

    @property
    def vermagic(self) -> str:
        return self.get("vermagic")

    @property
    def release(self) -> str:
        """The kernel release from vermagic (its first word)."""
        words = self.vermagic.split()
        return words[0] if words else ""


def not_a_module(path: Path, why: str) -> UserError:
    return UserError(
        f"{path} is not a kernel module: {why}",
        "build it with 'invoke build-module' (a .ko is an ELF relocatable with a .modinfo section)",
    )


def read_module_info(path: Path) -> ModuleInfo:
    """Parse ``path`` as an ELF relocatable and return its ``.modinfo`` fields."""
    path = Path(path)
    try:
        data = read_bytes(path, limit=MAX_MODULE_BYTES)
    except FileNotFoundError as exc:
        raise UserError(f"module file {path} does not exist", "run 'invoke build-module' first") from exc
    except UserError as exc:
        raise not_a_module(path, exc.message) from None
    return module_info_from_bytes(data, path)


def module_info_from_bytes(data: bytes, path: Path) -> ModuleInfo:
    """``read_module_info`` on bytes already read (``path`` names them in messages)."""
    if data[:4] != ELF_MAGIC or len(data) < 52:
        raise not_a_module(path, "no ELF header")
    elf_class, byte_order = data[4], data[5]
    if elf_class not in (1, 2) or byte_order not in (1, 2):
        raise not_a_module(path, "unknown ELF class or byte order")
    endian = "<" if byte_order == 1 else ">"
    is64 = elf_class == 2
    try:
        sections, elf_type, machine = section_table(data, endian, is64)
        raw = modinfo_bytes(data, sections)
    except struct.error as exc:
        raise not_a_module(path, "truncated ELF file") from exc
    if elf_type != ET_REL:
        raise not_a_module(path, f"ELF {ELF_TYPES.get(elf_type, elf_type)}, not relocatable")
    if raw is None:
        raise not_a_module(path, "no .modinfo section")
    return ModuleInfo(path, elf_type, MACHINES.get(machine, str(machine)), parse_modinfo(raw))


def section_table(data: bytes, endian: str, is64: bool) -> tuple[list[tuple[str, int, int]], int, int]:
    """(name, offset, size) of every section, the ELF type and the machine."""
    elf_type, machine = struct.unpack_from(endian + "HH", data, 16)
    if is64:
        shoff = struct.unpack_from(endian + "Q", data, 40)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 58)
        layout = endian + "IIQQQQIIQQ"
    else:
        shoff = struct.unpack_from(endian + "I", data, 32)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 46)
        layout = endian + "IIIIIIIIII"
    if shoff == 0:
        return [], elf_type, machine
    headers = []
    first = struct.unpack_from(layout, data, shoff)
    count = shnum or first[5]
    if shstrndx == SHN_XINDEX:
        shstrndx = first[6]
    for index in range(count):
        entry = struct.unpack_from(layout, data, shoff + index * shentsize)
        headers.append((entry[0], entry[4], entry[5]))
    _, str_offset, str_size = headers[shstrndx]
    names = data[str_offset : str_offset + str_size]
    sections = []
    for name_offset, offset, size in headers:
        end = names.find(b"\0", name_offset)
        sections.append((names[name_offset:end].decode(errors="replace"), offset, size))
    return sections, elf_type, machine


def modinfo_bytes(data: bytes, sections: list[tuple[str, int, int]]) -> bytes | None:
    for name, offset, size in sections:
        if name == ".modinfo":
            return data[offset : offset + size]
    return None


def parse_modinfo(raw: bytes) -> dict[str, list[str]]:
    """``key=value`` strings separated by NULs; a key may repeat (alias, parm)."""
    fields: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        text = item.decode(errors="replace")
        if "=" not in text:
            continue
        key, _, value = text.partition("=")
        fields.setdefault(key, []).append(value)
    return fields


def check_vermagic(info: ModuleInfo, release: str) -> None:
    """Refuse a module built for another kernel release than ``release``."""
    if info.release != release:
        raise UserError(
            f"{info.path.name} was built for kernel {info.release or '(no vermagic)'}, not {release} "
            f"(vermagic: {info.vermagic!r}); the kernel would refuse to load it",
            f"build against the development files of {release} exactly "
            f"(/lib/modules/{release}/build must belong to {release})",
        )
