"""Trial boot: the TOA kernel boots once; GRUB itself goes back to the old kernel.

``install-kernel --trial`` (and ``grub --trial``) write two files:

- grub.conf (``grubconf.edit_for_trial``): ``default saved``, the TOA entry first
  writing the old entry back as the default (``savedefault OLD``), ``panic=N`` on its
  kernel line, ``fallback=OLD``;
- the ``default`` file beside grub.conf (``/boot/grub/default``): the TOA entry's
  number, in the shape GRUB reads and rewrites in place (``grubconf.saved_default_text``).
  It is written first: with grub.conf still numeric, GRUB ignores it.

So the next boot is the TOA kernel's and every boot after it is the old kernel's:
a panic reboots (``panic=N``) into the old kernel with nobody at the console. A
hang does not reboot by itself: without a hardware watchdog someone must power
cycle the server (then it comes up on the old kernel).

``invoke verify --commit`` (``commit_trial``) makes a healthy TOA boot permanent:
``default=N`` for the TOA entry, its ``savedefault`` line gone. ``invoke rollback``
undoes a trial at any point; what it needs (whether the ``default`` file existed, its
backup) is kept in the manifest's ``install`` section under ``trial``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.boot import grubconf
from toa_kernel.boot.grubstep import GrubFile, GrubPlan, entry_identity, guarded_write
from toa_kernel.core.errors import ToaError, UserError
from toa_kernel.core.fileops import atomic_write, backup_file
from toa_kernel.core.plan import Change, Plan, file_edit, unified_diff
from toa_kernel.core.state import now_iso
from toa_kernel.system.rootfs import Root

TRIAL_KEY = "trial"
DEFAULT_FILE_MODE = 0o644
HANG_NOTE = (
    "a kernel that hangs (no panic) is not rebooted by panic=: without a hardware watchdog someone "
    "must power cycle the server, which then boots the old kernel by itself; a hardware watchdog "
    "(where the server has one) closes that gap"
)


@dataclass
class SavedDefaultFile:
    """GRUB's ``default`` file, beside the grub.conf GRUB reads."""

    root: Root
    path: Path
    text: str | None  # None: the file does not exist

    @classmethod
    def beside(cls, grub: GrubFile) -> SavedDefaultFile:
        path = grub.path.parent / grubconf.SAVED_DEFAULT_FILE
        try:
            text: str | None = path.read_bytes().decode(errors="surrogateescape")
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}", "run as root") from exc
        return cls(grub.root, path, text)

    @property
    def label(self) -> str:
        return self.root.system_path(self.path)

    @property
    def entry(self) -> int | None:
        """The entry GRUB boots for ``default saved`` (None: no file, or no number in it)."""
        return grubconf.parse_saved_default(self.text) if self.text is not None else None

    def holds(self, index: int) -> bool:
        """True when GRUB boots ``index`` from this file and can rewrite it in place."""
        return self.entry == index and grubconf.saved_default_usable(self.text)


@dataclass
class TrialPlan(GrubPlan):
    """The trial's grub.conf edit plus the ``default`` file, and their backups."""

    saved: SavedDefaultFile | None = None
    saved_backups: list[Path] = field(default_factory=list)


def plan_saved_default(saved: SavedDefaultFile, index: int, backups: list[Path]) -> Change | None:
    """Write the ``default`` file so ``default saved`` boots entry ``index`` (None: it already does)."""
    if saved.holds(index):
        return None

    def backup() -> None:
        if saved.path.exists():
            backups.append(backup_file(saved.path))

    summary = f"write {saved.label}: boot entry {index} next (GRUB's saved default)"
    return file_edit(
        saved.path, grubconf.saved_default_text(index), summary, label=saved.label.lstrip("/"),
        mode=DEFAULT_FILE_MODE, before=backup,
    )  # fmt: skip


def plan_trial(
    grub: GrubFile,
    release: str,
    args: tuple[str, ...],
    initrd_name: str | None,
    saved: int | None,
    panic_seconds: int,
) -> TrialPlan:
    """The trial: the ``default`` file first, then grub.conf (empty plan when both are done).

    ``saved``: the entry the ``default`` file holds now (for ``default saved``).
    """
    grub.parsed()
    try:
        edit = grubconf.edit_for_trial(
            grub.text, release, kernel_args=args, initrd_name=initrd_name, saved_default=saved,
            panic_seconds=panic_seconds,
        )  # fmt: skip
    except ToaError as exc:
        raise UserError(f"{grub.label}: {exc.message}", exc.fix or "") from exc
    saved_file = SavedDefaultFile.beside(grub)
    result = TrialPlan(Plan("grub.conf"), grub, edit, saved=saved_file)
    result.plan.add(plan_saved_default(saved_file, edit.saved_default, result.saved_backups))
    summary = "; ".join(edit.summary) or f"boot {release} once"
    result.plan.add(guarded_write(grub, edit.text, f"edit {grub.label}: {summary}", result.backups))
    return result


def trial_record(planned: TrialPlan, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``trial`` entry: the first run's facts about the ``default`` file are kept."""
    edit = planned.edit
    assert planned.saved is not None
    config = grubconf.parse(edit.text)
    record = dict(previous or {})
    record.setdefault("default_file", planned.saved.label)
    record.setdefault("default_file_existed", planned.saved.text is not None)
    if planned.saved_backups and not record.get("default_file_backup"):
        record["default_file_backup"] = planned.grub.root.system_path(planned.saved_backups[0])
    record.update(
        entry=entry_identity(config, edit.entry_index),
        return_entry=entry_identity(config, edit.return_entry),
        panic_seconds=edit.panic_seconds,
        armed_at=now_iso(),
    )
    record.pop("committed_at", None)
    return record


def trial_summary(edit: grubconf.TrialEdit) -> str:
    config = grubconf.parse(edit.text)
    toa, old = config.entries[edit.entry_index], config.entries[edit.return_entry]
    return (
        f"next boot: entry {edit.entry_index} '{toa.title}' once (panic={edit.panic_seconds}); "
        f"every boot after it: entry {edit.return_entry} '{old.title}' until 'invoke verify --commit'"
    )


def trial_notes(edit: grubconf.TrialEdit) -> list[str]:
    return [
        trial_summary(edit),
        f"a panic of the new kernel reboots after {edit.panic_seconds} s into the old one, nobody needed",
        HANG_NOTE,
        "after the reboot: 'invoke verify --commit' keeps the new kernel; 'invoke rollback' gives it up",
    ]


# ---------------------------------------------------------------- commit


def commit_edit(grub: GrubFile, release: str) -> grubconf.GrubEdit:
    grub.parsed()
    try:
        return grubconf.edit_commit_trial(grub.text, release)
    except ToaError as exc:
        raise UserError(f"{grub.label}: {exc.message}", exc.fix or "") from exc


def plan_commit(grub: GrubFile, release: str) -> GrubPlan:
    """grub.conf with the trial entry as the numeric default (empty plan: already so)."""
    edit = commit_edit(grub, release)
    result = GrubPlan(Plan("grub.conf"), grub, edit)
    summary = "; ".join(edit.summary) or f"boot {release} by default"
    result.plan.add(guarded_write(grub, edit.text, f"edit {grub.label}: {summary}", result.backups))
    return result


# ---------------------------------------------------------------- rollback


def plan_restore_saved_default(root: Root, trial: dict[str, Any]) -> Plan:
    """The ``default`` file as it was before the trial: removed when the trial created it,
    else its backup's bytes back."""
    plan = Plan("grub default file")
    label = trial.get("default_file")
    if not label:
        return plan
    path = root.resolve(label)
    if not trial.get("default_file_existed"):
        if path.exists() or path.is_symlink():
            plan.add(remove_change(path, label))
        return plan
    backup = root.path(trial["default_file_backup"]) if trial.get("default_file_backup") else None
    if backup is not None and backup.is_file():
        summary = f"restore {label} as it was before the trial (from {trial['default_file_backup']})"
        plan.add(restore_change(path, backup.read_bytes(), summary, label))
    return plan


def remove_change(path: Path, label: str) -> Change:
    old = path.read_bytes().decode(errors="surrogateescape") if path.is_file() else ""

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    summary = f"remove {label} (the trial created it)"
    return Change(summary=summary, action=remove, diff=unified_diff(old, "", label.lstrip("/")))


def restore_change(path: Path, data: bytes, summary: str, label: str) -> Change | None:
    current = path.read_bytes() if path.is_file() else None
    if current == data:
        return None
    old, new = ((text or b"").decode(errors="surrogateescape") for text in (current, data))
    diff = unified_diff(old, new, label.lstrip("/"))
    return Change(summary=summary, action=lambda: atomic_write(path, data), diff=diff)
