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

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from toa_kernel.boot import grubconf
from toa_kernel.boot.grubstep import GrubFile, GrubPlan, entry_identity, guarded_write
from toa_kernel.core.errors import ToaError, UserError
from toa_kernel.core.fileops import decode_text
from toa_kernel.core.plan import Change, Plan, unified_diff
from toa_kernel.core.state import now_iso
from toa_kernel.system.api import System
from toa_kernel.system.files import current_text, system_file_edit

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

    system: System
    path: str  # a system path
    text: str | None  # None: the file does not exist

    @classmethod
    def beside(cls, grub: GrubFile) -> SavedDefaultFile:
        path = str(PurePosixPath(grub.path).parent / grubconf.SAVED_DEFAULT_FILE)
        try:
            text = current_text(grub.system, path)
        except OSError as exc:
            raise UserError(
                f"cannot read {path} on {grub.system.label}: {exc.strerror}", "run as root"
            ) from exc
        return cls(grub.system, path, text)

    @property
    def label(self) -> str:
        return self.path

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
    saved_backups: list[str] = field(default_factory=list)


def plan_saved_default(saved: SavedDefaultFile, index: int, backups: list[str]) -> Change | None:
    """Write the ``default`` file so ``default saved`` boots entry ``index`` (None: it already does)."""
    if saved.holds(index):
        return None

    def backup() -> None:
        if saved.system.exists(saved.path):
            backups.append(saved.system.backup(saved.path))

    summary = f"write {saved.label}: boot entry {index} next (GRUB's saved default)"
    return system_file_edit(
        saved.system, saved.path, grubconf.saved_default_text(index), summary, mode=DEFAULT_FILE_MODE,
        before=backup,
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
        record["default_file_backup"] = planned.saved_backups[0]
    record.update(
        entry=entry_identity(config, edit.entry_index),
        return_entry=entry_identity(config, edit.return_entry),
        panic_seconds=edit.panic_seconds,
        armed_at=now_iso(),
    )
    record.pop("committed_at", None)
    record.pop("ended_at", None)
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


def plan_restore_saved_default(system: System, trial: dict[str, Any]) -> Plan:
    """The ``default`` file as it was before the trial: removed when the trial created it,
    else its backup's bytes back."""
    plan = Plan("grub default file")
    label = trial.get("default_file")
    if not label:
        return plan
    path = system.resolve(label)
    if not trial.get("default_file_existed"):
        if system.stat(path, follow_symlinks=False) is not None:
            plan.add(remove_change(system, path, label))
        return plan
    backup = trial.get("default_file_backup")
    data = read_backup(system, backup) if backup else None
    if data is not None:
        summary = f"restore {label} as it was before the trial (from {backup})"
        plan.add(restore_change(system, path, data, summary, label))
    return plan


def read_backup(system: System, backup: str) -> bytes | None:
    try:
        return system.read_bytes(backup)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def remove_change(system: System, path: str, label: str) -> Change:
    old = current_text(system, path) or ""

    def remove() -> None:
        system.remove(path)

    summary = f"remove {label} (the trial created it)"
    return Change(summary=summary, action=remove, diff=unified_diff(old, "", label.lstrip("/")))


def restore_change(system: System, path: str, data: bytes, summary: str, label: str) -> Change | None:
    current = current_text(system, path)
    new = decode_text(data)
    if current == new:
        return None
    diff = unified_diff(current or "", new, label.lstrip("/"))
    return Change(summary=summary, action=lambda: system.write_bytes_atomic(path, data), diff=diff)
