"""What ``invoke verify`` looks at: facts gathered from a system under a root.

Facts are plain data (JSON-serialisable, with a schema version) so the same
checks judge the live system, a sandbox root holding a ``proc/`` tree, or a
snapshot taken elsewhere (``invoke verify --collect > facts.json`` on one host,
``invoke verify --facts facts.json`` on another; the boot lab writes one from a
QEMU console). Every field may be ``None``: "not known". A partial facts file
(the lab knows only the release, the command line and grub's default) is valid;
checks whose facts are missing report "n/a".

IPv6 built in or modular is decided from, in order: the kernel's own config
(``/boot/config-R``, then ``/proc/config.gz`` of the running kernel),
``modules.builtin`` (kernels 2.6.33+), ``modules.dep`` (``ipv6.ko`` listed ->
module), ``/proc/modules`` (``ipv6`` loaded -> module) and finally
``/proc/net/if_inet6`` (IPv6 is up while no ``ipv6.ko`` exists -> built in).
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from toa_kernel.core.errors import ToaError, UserError
from toa_kernel.core.layout import (
    BOOT_DIR,
    CRON_FILE,
    ETC_GRUB_CONF,
    GRUB_CONF,
    MENU_LST,
    MODULES_DIR,
    MODULES_SCRIPT,
    PROC_CMDLINE,
    PROC_MODULES,
    PROC_OSRELEASE,
    PROC_TOA_STATS,
    RC_LOCAL,
)
from toa_kernel.core.state import now_iso
from toa_kernel.system.api import NotRegularFile, System
from toa_kernel.system.files import read_system_text
from toa_kernel.system.runtime import MAX_TEXT, KernelLog, read_kernel_log, read_loaded_modules, read_text

SCHEMA_VERSION = 1
TOA_STATS_ROWS = (
    "syn_recv_sock_toa",
    "syn_recv_sock_no_toa",
    "getname_toa_ok",
    "getname_toa_mismatch",
    "getname_toa_bypass",
    "getname_toa_empty",
)
MODULE_NAME = "toa"
PROC_CONFIG_GZ = "/proc/config.gz"
PROC_IF_INET6 = "/proc/net/if_inet6"
SAVED_DEFAULT = "/boot/grub/default"
FILE_TEXT_LIMIT = 64 * 1024
KERNEL_IMAGE_RE = re.compile(r"vmlinuz-(?P<release>[^/\s]+)$")
IPV6_MODES = ("builtin", "module", "absent", "unknown")


# --- the facts ---------------------------------------------------------------


@dataclass
class FileFact:
    """A file's presence, type, permissions, owner and (small) content."""

    path: str
    kind: str = "missing"  # file, dir, other, missing
    mode: str | None = None  # permission bits in octal, "0644"
    uid: int | None = None
    gid: int | None = None
    text: str | None = None

    @property
    def exists(self) -> bool:
        return self.kind != "missing"

    @property
    def mode_bits(self) -> int | None:
        return None if self.mode is None else int(self.mode, 8)


@dataclass
class ToaStats:
    """``/proc/net/toa_stats``: per-CPU counters and their sums."""

    present: bool
    cpus: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    per_cpu: dict[str, list[int]] = field(default_factory=dict)
    problem: str = ""


@dataclass
class GrubEntryFact:
    index: int
    title: str
    kernel: str = ""
    kernel_args: str = ""
    initrd: str = ""
    release: str | None = None


@dataclass
class GrubFacts:
    """The boot loader's configuration: entries, ``default=`` and ``fallback=``."""

    path: str
    found: bool = True
    default: int | str | None = None  # as written: a number, "saved" or absent
    default_index: int | None = None  # the entry GRUB boots (None: cannot tell)
    fallback: list[int] = field(default_factory=list)
    entries: list[GrubEntryFact] = field(default_factory=list)
    problem: str = ""

    def entry(self, index: int | None) -> GrubEntryFact | None:
        if index is None:
            return None
        return next((e for e in self.entries if e.index == index), None)

    @property
    def default_entry(self) -> GrubEntryFact | None:
        return self.entry(self.default_index)

    def index_for_release(self, release: str) -> int | None:
        return next((e.index for e in self.entries if e.release == release), None)


@dataclass
class ModuleFacts:
    """The toa module of one release: files on disk and its ``modules.dep`` entry."""

    release: str
    files: list[str] = field(default_factory=list)
    modules_dep: str = ""
    in_modules_dep: bool | None = None  # None: modules.dep missing


@dataclass
class Ipv6Facts:
    mode: str = "unknown"  # builtin, module, absent, unknown
    source: str = ""
    release: str = ""


@dataclass
class BootHooks:
    """How toa is loaded at boot and kept loaded: startup script, rc.local, cron."""

    modules_script: FileFact | None = None
    rc_local: FileFact | None = None
    cron: FileFact | None = None


@dataclass
class Facts:
    """Everything verify knows about one system; ``None`` means "not known"."""

    schema: int = SCHEMA_VERSION
    source: str = ""
    collected_at: str = ""
    release: str | None = None
    cmdline: str | None = None
    loaded_modules: list[str] | None = None
    toa_stats: ToaStats | None = None
    kernel_log: KernelLog | None = None
    grub: GrubFacts | None = None
    module: ModuleFacts | None = None
    ipv6: Ipv6Facts | None = None
    boot_hooks: BootHooks | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


# --- gathering from a root -----------------------------------------------------


def gather(system: System, *, release: str | None = None, dmesg: Callable[[], str] | None = None) -> Facts:
    """Read every fact from ``system`` (this machine under a root, or a server over SSH).

    ``release`` chooses the release whose module and IPv6 config are inspected
    (default: the running one). ``dmesg`` returns the live kernel log (default:
    the system's ``dmesg`` command); it is used only when the root is the live system.
    """
    running = read_text(system, PROC_OSRELEASE)
    running = running.strip() if running is not None else None
    inspected = release or running
    proc = system.stat("/proc")
    return Facts(
        source=f"root {system.root}" if not system.host else f"root {system.root} on {system.host}",
        collected_at=now_iso(),
        release=running,
        cmdline=read_cmdline(system),
        loaded_modules=read_loaded_modules(system),
        toa_stats=read_toa_stats(system) if proc is not None and proc.kind == "dir" else None,
        kernel_log=read_kernel_log(system, dmesg),
        grub=read_grub(system),
        module=read_module(system, inspected) if inspected else None,
        ipv6=read_ipv6(system, inspected) if inspected else None,
        boot_hooks=read_boot_hooks(system),
    )


def read_cmdline(system: System) -> str | None:
    text = read_text(system, PROC_CMDLINE)
    return None if text is None else text.strip()


def read_toa_stats(system: System) -> ToaStats:
    """``/proc/net/toa_stats`` parsed; ``present=False`` when the file is missing."""
    text = read_text(system, PROC_TOA_STATS)
    if text is None:
        return ToaStats(present=False)
    return parse_toa_stats(text)


def parse_toa_stats(text: str) -> ToaStats:
    """Parse the table the module prints: ``CPU0 CPU1 ...`` then ``name: n n ...``."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ToaStats(present=True, problem="the file is empty")
    header = lines[0].split()
    if not header or not all(re.fullmatch(r"CPU\d+", word) for word in header):
        return ToaStats(present=True, problem=f"unexpected header line {lines[0].strip()!r}")
    stats = ToaStats(present=True, cpus=len(header))
    bad: list[str] = []
    for line in lines[1:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        if not rest and " " in name:
            name, rest = name.split(None, 1)
        try:
            values = [int(word) for word in rest.split()]
        except ValueError:
            bad.append(line.strip())
            continue
        if not name or len(values) != stats.cpus:
            bad.append(line.strip())
            continue
        stats.per_cpu[name] = values
        stats.counters[name] = sum(values)
    missing = [row for row in TOA_STATS_ROWS if row not in stats.counters]
    problems = [f"unreadable row {row!r}" for row in bad[:3]]
    if missing:
        problems.append("missing rows: " + ", ".join(missing))
    stats.problem = "; ".join(problems)
    return stats


def grub_conf_path(system: System) -> str | None:
    """grub.conf on the system, links resolved inside the root (None: there is none)."""
    for system_path in (GRUB_CONF, ETC_GRUB_CONF, MENU_LST):
        try:
            path = system.resolve(system_path)
        except UserError:
            continue  # a loop of links: the next candidate, else "no grub.conf"
        found = system.stat(path)
        if found is not None and found.kind == "file":
            return path
    return None


def read_grub(system: System) -> GrubFacts:
    """Entries, ``default=`` and ``fallback=`` of the system's grub.conf."""
    system_path = grub_conf_path(system)
    if system_path is None:
        return GrubFacts(path=GRUB_CONF, found=False, problem=f"no {GRUB_CONF} (nor {ETC_GRUB_CONF})")
    try:
        text = read_system_text(system, system_path)
    except (OSError, UserError) as exc:
        reason = exc.message if isinstance(exc, UserError) else exc.strerror
        return GrubFacts(path=system_path, found=False, problem=f"cannot read it: {reason}")
    saved = read_text(system, SAVED_DEFAULT, limit=64)
    return grub_facts_from_text(text, system_path, saved_default_text=saved)


def grub_facts_from_text(
    text: str, path: str = GRUB_CONF, saved_default_text: str | None = None
) -> GrubFacts:
    """Facts from a grub.conf's text (the boot lab uses this on the image's copy).

    ``default_index`` is the entry GRUB 0.97 boots by its own rules (an index past
    the last entry falls to ``fallback=``, then 0); for ``default=saved`` it comes
    from ``/boot/grub/default`` when that was read, else it is unknown.
    """
    from toa_kernel.boot import grubconf

    config = grubconf.parse(text)
    facts = GrubFacts(
        path=path,
        fallback=list(config.fallbacks),
        entries=[entry_fact(index, entry) for index, entry in enumerate(config.entries)],
    )
    try:
        facts.default = config.default
    except ToaError as exc:
        facts.problem = exc.message
    saved = grubconf.parse_saved_default(saved_default_text) if saved_default_text else None
    if facts.default == "saved" and saved is None:
        facts.default_index = None
    else:
        facts.default_index = grubconf.default_index(config, saved)
    return facts


def entry_fact(index: int, entry: Any) -> GrubEntryFact:
    args = getattr(entry, "kernel_args", "") or ""
    if not isinstance(args, str):
        args = " ".join(str(a) for a in args)
    kernel = str(getattr(entry, "kernel", "") or "")
    return GrubEntryFact(
        index=index,
        title=str(getattr(entry, "title", "") or ""),
        kernel=kernel,
        kernel_args=args,
        initrd=str(getattr(entry, "initrd", "") or ""),
        release=getattr(entry, "release", None) or release_of_kernel(kernel),
    )


def release_of_kernel(kernel_path: str) -> str | None:
    """``/vmlinuz-2.6.32-toa`` -> ``2.6.32-toa``."""
    match = KERNEL_IMAGE_RE.search(kernel_path.strip())
    return match.group("release") if match else None


def as_index_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        return [int(v) for v in value.split() if v.isdigit()]
    return [int(v) for v in value]


def read_module(system: System, release: str) -> ModuleFacts:
    """toa.ko files under ``/lib/modules/R`` and whether ``modules.dep`` knows toa."""
    base = f"{MODULES_DIR}/{release}"
    facts = ModuleFacts(release=release, modules_dep=f"{base}/modules.dep")
    facts.files = system.find(base, f"{MODULE_NAME}.ko")
    dep = read_text(system, facts.modules_dep)
    if dep is not None:
        facts.in_modules_dep = f"{MODULE_NAME}.ko" in dep_modules(dep)
    return facts


def dep_modules(modules_dep: str) -> set[str]:
    """File names of the modules ``modules.dep`` lists (old absolute or new relative paths)."""
    names = set()
    for line in modules_dep.splitlines():
        target, colon, _ = line.partition(":")
        if colon and target.strip():
            names.add(target.strip().rsplit("/", 1)[-1])
    return names


def read_ipv6(system: System, release: str) -> Ipv6Facts:
    """Is IPv6 built into ``release``? (See the module docstring for the order.)"""
    facts = ipv6_mode(system, release)
    facts.release = release
    return facts


def ipv6_mode(system: System, release: str) -> Ipv6Facts:
    config_path = f"{BOOT_DIR}/config-{release}"
    mode = config_ipv6(read_text(system, config_path))
    if mode:
        return Ipv6Facts(mode, config_path)
    running = (read_text(system, PROC_OSRELEASE) or "").strip() == release
    if running:
        mode = config_ipv6(read_gzip_text(system, PROC_CONFIG_GZ))
        if mode:
            return Ipv6Facts(mode, PROC_CONFIG_GZ)
    base = f"{MODULES_DIR}/{release}"
    builtin = read_text(system, f"{base}/modules.builtin")
    if builtin is not None and "ipv6.ko" in {
        line.strip().rsplit("/", 1)[-1] for line in builtin.splitlines()
    }:
        return Ipv6Facts("builtin", f"{base}/modules.builtin")
    dep = read_text(system, f"{base}/modules.dep")
    if dep is not None and "ipv6.ko" in dep_modules(dep):
        return Ipv6Facts("module", f"{base}/modules.dep lists ipv6.ko")
    if running and "ipv6" in (read_loaded_modules(system) or []):
        return Ipv6Facts("module", f"{PROC_MODULES} lists ipv6")
    if running and dep is not None and system.exists(PROC_IF_INET6):
        return Ipv6Facts("builtin", f"{PROC_IF_INET6} exists and modules.dep has no ipv6.ko")
    return Ipv6Facts("unknown", f"no {config_path} and no ipv6.ko in modules.dep")


def config_ipv6(config_text: str | None) -> str | None:
    """``builtin``/``module``/``absent`` from a kernel .config text (None: no answer)."""
    if config_text is None:
        return None
    for line in config_text.splitlines():
        line = line.strip()
        if line == "CONFIG_IPV6=y":
            return "builtin"
        if line == "CONFIG_IPV6=m":
            return "module"
        if line == "# CONFIG_IPV6 is not set":
            return "absent"
    return None


# /proc/config.gz of a kernel is some 30 KiB; never read more than this of it.
CONFIG_GZ_LIMIT = 4 * 1024 * 1024


def read_gzip_text(system: System, system_path: str) -> str | None:
    try:
        data = system.read_bytes(system_path, CONFIG_GZ_LIMIT)
    except (OSError, NotRegularFile):
        return None
    try:
        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        text = inflate.decompress(data, MAX_TEXT)  # bounded: a gzip bomb under a root stops here
    except (zlib.error, gzip.BadGzipFile, EOFError):
        return None
    return text.decode(errors="replace")


def read_boot_hooks(system: System) -> BootHooks:
    return BootHooks(
        modules_script=file_fact(system, MODULES_SCRIPT),
        rc_local=file_fact(system, RC_LOCAL),
        cron=file_fact(system, CRON_FILE),
    )


def file_fact(system: System, system_path: str) -> FileFact:
    """Type, permission bits, owner and text of a file (links followed inside the root)."""
    try:
        found = system.stat(system_path)
    except PermissionError:
        return FileFact(path=system_path, kind="other")
    if found is None:
        return FileFact(path=system_path)
    kind = found.kind if found.kind in ("file", "dir") else "other"
    text = read_text(system, system_path, limit=FILE_TEXT_LIMIT) if kind == "file" else None
    return FileFact(
        path=system_path, kind=kind, mode=format(found.mode, "04o"), uid=found.uid, gid=found.gid, text=text
    )
