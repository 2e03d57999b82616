"""``invoke rollback``: undo install-kernel, leaving the kernel files in place.

grub.conf comes back from the backup taken before the install when it still
holds exactly what the install wrote, or, for an install that failed before its
grub.conf step, what the system's installkernel (grubby) left (a trial boot's ``default``
file is removed when the trial created it, else its backup comes back); when someone changed
it since, only ``default=`` (and ``fallback=``) is pointed back at the previous kernel's
entry, and a trial's ``savedefault`` line leaves the TOA entry.
The startup hook and the cron job are removed (only files and lines carrying
the project's marker); a hook file the install took over comes back from its
backup, bytes, mode and owner. The installed vmlinuz, initramfs and modules stay
after a finished install (the next boot simply does not choose them); after an
install that failed before grub.conf was pointed at them they are removed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from toa_kernel.boot import hooks as boothooks
from toa_kernel.boot import preflight
from toa_kernel.boot import trial as trialboot
from toa_kernel.boot.grubstep import GrubFile, GrubPlan, plan_restore, write_problem
from toa_kernel.boot.install import recorded_flags, same_system, system_for
from toa_kernel.core.console import Console
from toa_kernel.core.errors import ToaError, UserError
from toa_kernel.core.plan import Change, Plan
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.system.api import System

SECTION = "install"
DONE_SECTION = "rollback"


@dataclass
class RollbackReport:
    """What rollback did, or would do with ``--dry-run``."""

    root: str
    release: str | None = None
    dry_run: bool = False
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    grub_conf: str | None = None
    kept: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def rows(self) -> list[tuple[str, Any]]:
        verb = "would change" if self.dry_run else "changed"
        rows: list[tuple[str, Any]] = [
            ("release", self.release or "-"),
            ("root", self.root),
            (verb, len(self.changes) or "nothing (nothing to roll back)"),
            ("grub.conf", self.grub_conf or "-"),
            ("kernel files kept", ", ".join(self.kept) or "-"),
        ]
        rows += [("note", note) for note in self.notes]
        return rows


def grub_step(system: System, record: dict[str, Any]) -> tuple[GrubPlan | None, list[str], list[ToaError]]:
    """The grub.conf restore (None when the install never touched grub.conf)."""
    grub_record = record.get("grub") or {}
    if not (grub_record.get("backup") or grub_record.get("previous_entry")):
        return None, [], []
    try:
        grub = GrubFile.read(system)
        trial_release = record.get("release") if record.get(trialboot.TRIAL_KEY) else None
        planned, notes = plan_restore(grub, grub_record, trial_release)
    except UserError as exc:
        return None, [], [exc]
    problem = write_problem(system, grub.path) if planned.plan else None
    return planned, notes, [problem] if problem else []


def rollback(
    settings: Settings,
    dry_run: bool = False,
    console: Console | None = None,
    euid: int | None = None,
    system: System | None = None,
) -> RollbackReport:
    """Undo what the manifest says install-kernel (or grub) did on the system ``settings`` name."""
    with system_for(settings, system) as target:
        return rollback_on(target, settings, dry_run, console or Console(), euid)


def rollback_on(
    system: System, settings: Settings, dry_run: bool, console: Console, euid: int | None
) -> RollbackReport:
    workdir = Workdir(settings.workdir)
    record = workdir.section(SECTION)
    report = RollbackReport(root=system.root, release=record.get("release"), dry_run=dry_run)
    if record and not same_system(record, system):
        raise UserError(
            f"the install recorded in {workdir.manifest_path} went into {recorded_flags(record)}, "
            f"not {system.flags}",
            f"run 'invoke rollback {recorded_flags(record)}'",
        )
    problems = preflight.privileges(system, euid) + preflight.inside_root(system)
    planned, notes, grub_problems = grub_step(system, record)
    preflight.require(problems + grub_problems)
    report.notes += notes
    if not record:
        report.notes.append(
            "no install is recorded in the work directory: only marked boot hooks are removed"
        )
    hooks = boothooks.plan_remove(system, record.get("taken_over"), report.notes)
    leftovers = plan_leftovers(system, record)
    saved_default = trialboot.plan_restore_saved_default(system, record.get(trialboot.TRIAL_KEY) or {})
    plans = [
        p
        for p in (planned.plan if planned else None, saved_default, hooks, leftovers or None)
        if p is not None
    ]
    report.changes += apply_all(plans, dry_run, console)
    if planned is not None:
        report.grub_conf = planned.grub.label
    removed = set(leftover_files(system, record)) if dry_run else set()
    report.kept = [
        path for path in record.get("files_added") or [] if path not in removed and system.exists(path)
    ]
    if preflight.running_release(system) == report.release and report.release:
        report.notes.append(
            f"{report.release} is running now: the previous kernel boots after the next reboot"
        )
    if record and not dry_run:
        workdir.update_manifest(DONE_SECTION, {**record, "rolled_back_at": now_iso()})
        workdir.update_manifest(SECTION, None)
    return report


def leftover_files(system: System, record: dict[str, Any]) -> list[str]:
    """Kernel files an install added and then failed before grub.conf pointed at them
    (nothing boots them). A finished install keeps its files."""
    grub_edited = bool((record.get("grub") or {}).get("written_sha256"))
    if not record or record.get("status") == "ok" or grub_edited:
        return []
    return [path for path in record.get("files_added") or [] if system.exists(path)]


def plan_leftovers(system: System, record: dict[str, Any]) -> Plan:
    plan = Plan("kernel files")
    for system_path in leftover_files(system, record):
        plan.add(
            Change(
                f"remove {system_path} (left by an install that did not finish)",
                functools.partial(system.remove, system_path, recursive=True),
            )
        )
    return plan


def apply_all(plans: list[Plan], dry_run: bool, console: Console) -> list[str]:
    changes: list[str] = []
    for plan in plans:
        changes += plan.apply(dry_run, echo=console.say)
    return changes
