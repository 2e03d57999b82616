"""The grub.conf step: make the TOA kernel GRUB legacy's default, safely.

The text edit itself is ``grubconf.edit_for_release`` (a parser that round-trips
byte for byte). This module finds the file on a ``System`` (``/etc/grub.conf`` is
a link to ``../boot/grub/grub.conf``: the link's target is what is written),
checks that it can be written, reads the declarative inputs in ``grub/`` (the
kernel arguments and the boot-entry policy, files of the project) and plans the
write: a timestamped backup first (same mode and owner: grub.conf can hold a
password hash), then temp file, sync, rename, sync, on this machine or on a
server over SSH alike.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.boot import grubconf
from toa_kernel.core.errors import ToaError, UserError
from toa_kernel.core.fileops import encode_text, read_text
from toa_kernel.core.layout import ETC_GRUB_CONF, GRUB_CONF, MENU_LST
from toa_kernel.core.plan import Change, Plan
from toa_kernel.core.settings import KERNEL_ARG_RE, Settings, template_problem
from toa_kernel.system.api import FileStat, System
from toa_kernel.system.files import read_system_text, system_file_edit

KERNEL_ARGS_FILE = "kernel-args"
BOOT_ENTRY_FILE = "boot-entry"
ARG_RE = KERNEL_ARG_RE
POLICY_KEYS = {"initrd"}


def read_input(path: Path) -> list[str]:
    """Lines of a ``grub/`` input file without comments and blank lines."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        return []
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def check_args(args: list[str], origin: str) -> tuple[str, ...]:
    for arg in args:
        if not ARG_RE.match(arg):
            raise UserError(
                f"kernel argument {arg!r} (from {origin}) is not a plain word or key=value",
                "use arguments like nohz=off or console=ttyS0,115200 (no quotes, spaces or #)",
            )
    return tuple(args)


def kernel_args(settings: Settings) -> tuple[str, ...]:
    """Arguments for the TOA kernel's boot entry: ``grub/kernel-args`` then ``kernel_args``."""
    path = settings.input_dir("grub") / KERNEL_ARGS_FILE
    from_file = check_args([word for line in read_input(path) for word in line.split()], str(path))
    from_flag = check_args(settings.kernel_args.replace(",", " ").split(), "--kernel-args")
    merged: dict[str, str] = {}
    for arg in (*from_file, *from_flag):
        merged[arg.split("=", 1)[0]] = arg  # a later value for the same key wins
    return tuple(merged.values())


@dataclass(frozen=True)
class BootEntryPolicy:
    """``grub/boot-entry``: how an entry added for the new kernel looks."""

    initrd: str = "initramfs-{release}.img"

    def initrd_name(self, release: str) -> str:
        return self.initrd.format(release=release)


def boot_entry_policy(settings: Settings) -> BootEntryPolicy:
    """Read ``grub/boot-entry`` (``key = value`` lines); defaults when absent."""
    path = settings.input_dir("grub") / BOOT_ENTRY_FILE
    values: dict[str, str] = {}
    for line in read_input(path):
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key not in POLICY_KEYS:
            raise UserError(
                f"{path}: cannot read {line!r}",
                f"write 'key = value' lines; known keys: {', '.join(sorted(POLICY_KEYS))}",
            )
        values[key] = value.strip()
    policy = BootEntryPolicy(**values)
    if "{release}" not in policy.initrd or "/" in policy.initrd or template_problem(policy.initrd, "release"):
        raise UserError(
            f"{path}: initrd = {policy.initrd!r} must be a file name holding {{release}}",
            "for CentOS 6 use: initrd = initramfs-{release}.img",
        )
    return policy


CANDIDATES = (GRUB_CONF, ETC_GRUB_CONF, MENU_LST)

LINK_HINT = (
    f"make {ETC_GRUB_CONF} a link to ../boot/grub/grub.conf and {MENU_LST} a link to ./grub.conf "
    f"(ls -l {ETC_GRUB_CONF} {GRUB_CONF} {MENU_LST} under the root shows them)"
)


def resolve(system: System, system_path: str) -> str:
    """A candidate's real path; a loop of links is an error whose fix names the links."""
    try:
        return system.resolve(system_path)
    except UserError as exc:
        raise UserError(exc.message, LINK_HINT) from exc


def locate(system: System) -> str | None:
    """The real grub.conf on the system (links resolved inside the root), or None."""
    for system_path in CANDIDATES:
        found = system.stat(resolve(system, system_path))
        if found is not None and found.kind == "file":
            return resolve(system, system_path)
    return None


def kind_text(found: FileStat) -> str:
    return {"dir": "a directory", "link": "a symbolic link"}.get(
        found.kind, "not a regular file (a FIFO, a device or a socket)"
    )


def why_missing(system: System) -> str:
    """Why no candidate is a file: a dangling link or something that is not a file, named."""
    for system_path in CANDIDATES:
        target = system.readlink(system_path)
        real = system.stat(resolve(system, system_path))
        if target is not None and real is None:
            return f"{system_path} is a dangling symbolic link: it points to {target}, which does not exist"
        if real is not None and real.kind != "file":
            return f"{system_path} is {kind_text(real)}, not a file"
    return f"neither {GRUB_CONF} nor {ETC_GRUB_CONF} exists"


def sha256_text(text: str) -> str:
    return hashlib.sha256(encode_text(text)).hexdigest()


@dataclass
class GrubFile:
    """grub.conf as found on a system: where it really is (a system path) and what it says."""

    system: System
    path: str
    text: str

    @property
    def label(self) -> str:
        return self.path

    @classmethod
    def read(cls, system: System) -> GrubFile:
        path = locate(system)
        if path is None:
            raise UserError(
                f"no GRUB legacy configuration on {system.label}: {why_missing(system)}",
                "this step needs CentOS 6 / RHEL 6 with GRUB legacy; check --root, or " + LINK_HINT,
            )
        return cls(system, path, read_system_text(system, path))

    def parsed(self) -> Any:
        try:
            return grubconf.parse(self.text)
        except ToaError as exc:
            raise UserError(f"{self.label} cannot be parsed: {exc.message}", exc.fix or "") from exc
        except ValueError as exc:
            raise UserError(
                f"{self.label} cannot be parsed: {exc}", f"check {self.label} by hand (grub --batch)"
            ) from exc


def write_problem(system: System, path: str) -> UserError | None:
    """Why ``path`` (and its directory) cannot be safely replaced, or None."""
    found = system.stat(path)
    if found is None:
        return UserError(f"{path} does not exist on {system.label}", "check --root")
    host = system.host_path(path)
    if not found.mode & stat.S_IWUSR:
        return UserError(
            f"{path} is read-only (mode {found.mode:04o}): someone protected it",
            f"make it writable for root (chmod u+w {host}) if it may be changed, then run again",
        )
    if not system.writable(path):
        return UserError(
            f"{path} cannot be written (read-only filesystem or immutable file)",
            f"remount the filesystem read-write or 'chattr -i {host}', then run again",
        )
    parent = str(Path(path).parent)
    if not system.writable(parent):
        return UserError(
            f"{system.host_path(parent)} is not writable: the backup and the new file are written there",
            "remount the filesystem read-write and run as root",
        )
    return None


@dataclass
class GrubPlan:
    """The planned grub.conf edit and what rollback needs to know about it."""

    plan: Plan
    grub: GrubFile
    edit: Any = None
    backups: list[str] = field(default_factory=list)  # system paths of the backups made

    @property
    def written_sha256(self) -> str:
        return sha256_text(self.edit.text) if self.edit is not None else sha256_text(self.grub.text)


def edit_for(
    grub: GrubFile, release: str, args: tuple[str, ...], initrd_name: str | None, saved: int | None = None
) -> Any:
    """``grubconf.edit_for_release`` on the file's text, errors turned into UserErrors."""
    grub.parsed()
    try:
        return grubconf.edit_for_release(
            grub.text, release, kernel_args=args, initrd_name=initrd_name, saved_default=saved
        )
    except ToaError as exc:
        raise UserError(f"{grub.label}: {exc.message}", exc.fix or "") from exc
    except ValueError as exc:
        raise UserError(
            f"{grub.label}: cannot add a boot entry for {release}: {exc}",
            "make sure grub.conf has a working default entry to copy (grubby does the same)",
        ) from exc


def guarded_write(grub: GrubFile, new_text: str, summary: str, backups: list[str]) -> Change | None:
    """A file edit of grub.conf that backs it up first (the backup path lands in ``backups``)."""

    def backup() -> None:
        backups.append(grub.system.backup(grub.path))

    return system_file_edit(grub.system, grub.path, new_text, summary, before=backup)


def plan_edit(
    grub: GrubFile, release: str, args: tuple[str, ...], initrd_name: str | None, saved: int | None = None
) -> GrubPlan:
    """The grub.conf change that makes ``release`` the default (empty when already so).

    ``initrd_name``: file name for an added entry's initrd ("" for none);
    ``saved``: the entry ``/boot/grub/default`` records, for ``default=saved``.
    """
    edit = edit_for(grub, release, args, initrd_name, saved)
    result = GrubPlan(Plan("grub.conf"), grub, edit)
    summary = "; ".join(edit.summary) if edit.summary else f"boot {release} by default"
    result.plan.add(guarded_write(grub, edit.text, f"edit {grub.label}: {summary}", result.backups))
    return result


def entry_identity(config: Any, index: int | None) -> dict[str, Any] | None:
    """Title and kernel path of entry ``index`` (to find it again after insertions)."""
    entries = list(getattr(config, "entries", []) or [])
    if index is None or not 0 <= index < len(entries):
        return None
    entry = entries[index]
    return {
        "index": index,
        "title": str(getattr(entry, "title", "") or ""),
        "kernel": str(getattr(entry, "kernel", "") or ""),
    }


def find_entry(config: Any, identity: dict[str, Any]) -> int | None:
    """Index of the entry with this title and kernel now (kernel alone as a second choice)."""
    entries = list(getattr(config, "entries", []) or [])
    for strict in (True, False):
        for index, entry in enumerate(entries):
            same_kernel = str(getattr(entry, "kernel", "") or "") == identity.get("kernel")
            same_title = str(getattr(entry, "title", "") or "") == identity.get("title")
            if same_kernel and (same_title or not strict):
                return index
    return None


def plan_restore(
    grub: GrubFile, record: dict[str, Any], trial_release: str | None = None
) -> tuple[GrubPlan, list[str]]:
    """Undo the install's grub.conf changes; returns the plan and notes for the user.

    When grub.conf is still exactly what the install wrote, the backup taken
    before the install comes back. When someone changed it since, only
    ``default=`` is pointed back at the previous kernel's entry (and, after a trial
    of ``trial_release``, its entry loses the trial's ``savedefault N``).
    """
    result = GrubPlan(Plan("grub.conf"), grub)
    notes: list[str] = []
    backup = backup_text(grub.system, record.get("backup"))
    # what the install left: its own edit, else (an install that failed before it) installkernel's
    left = record.get("written_sha256") or record.get("installkernel_sha256")
    if backup is not None and sha256_text(grub.text) == left:
        text = backup
        summary = f"restore {grub.label} as it was before the install (from {record['backup']})"
        result.plan.add(guarded_write(grub, text, summary, result.backups))
        return result, notes
    previous = record.get("previous_entry") or {}
    config = grub.parsed()
    index = find_entry(config, previous) if previous else None
    if index is None:
        notes.append(
            f"{grub.label} changed since the install and its previous default entry "
            f"({previous.get('title') or 'unknown'}) is not there: left as it is"
        )
        return result, notes
    fallback = restored_fallback(config, record)
    try:
        edit = grubconf.edit_restore_default(grub.text, index, fallback, trial_release)
    except (ToaError, ValueError) as exc:
        raise UserError(f"{grub.label}: cannot point default= back: {exc}") from exc
    result.edit = edit
    summary = "; ".join(edit.summary) or f"default={index}"
    result.plan.add(guarded_write(grub, edit.text, f"edit {grub.label}: {summary}", result.backups))
    if result.plan:
        gone = backup is None
        why = (
            f"the backup {record.get('backup')} is gone"
            if gone
            else f"{grub.label} changed since the install"
        )
        notes.append(f"{why}: pointing default= back at '{previous.get('title')}' instead of restoring")
    return result, notes


def restored_fallback(config: Any, record: dict[str, Any]) -> str | None:
    """No ``fallback=`` when there was none before the install; otherwise keep today's."""
    if record.get("previous_fallback") is None:
        return None
    current = config.global_command("fallback")
    return current.value if current is not None else None


def backup_text(system: System, backup: Any) -> str | None:
    """The text of a recorded backup (a system path), None when it is gone."""
    if not backup:
        return None
    try:
        return read_system_text(system, str(backup))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
