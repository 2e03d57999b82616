"""``invoke verify --commit``: keep the TOA kernel after a healthy trial boot.

A trial (``install-kernel --trial``) boots the TOA kernel once; GRUB has already
written the old entry back as the default while booting it. Committing makes the
TOA entry the permanent default the ordinary way (``default=N``, its
``savedefault`` line gone, ``fallback=`` left on the old kernel), and only when:

- a trial is recorded in the work directory's manifest;
- the running kernel is the trial's release (``/proc/sys/kernel/osrelease``, or the
  facts file's ``release``): anything else means the trial boot failed and GRUB
  already went back;
- verify passes: no check FAILs (``grub-default`` is left out: during a trial it
  rightly says the next boot leaves TOA, which is what the commit changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.boot import preflight
from toa_kernel.boot import trial as trialboot
from toa_kernel.boot.grubstep import GrubFile, write_problem
from toa_kernel.boot.install import (
    SECTION,
    InstallRecord,
    record_grub,
    recorded_flags,
    same_system,
    system_for,
)
from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.system.api import System
from toa_kernel.verify.checks import Status, select
from toa_kernel.verify.run import Report, expectation, judge, obtain_facts

LEFT_OUT = ("grub-default",)  # what the commit itself changes


@dataclass
class CommitReport:
    """What ``verify --commit`` judged and changed (or would change with ``--dry-run``)."""

    release: str
    root: str
    verify: Report
    dry_run: bool = False
    changes: list[str] = field(default_factory=list)
    grub_conf: str | None = None
    default_entry: int | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "root": self.root,
            "dry_run": self.dry_run,
            "committed": bool(self.changes) and not self.dry_run,
            "changes": self.changes,
            "grub_conf": self.grub_conf,
            "default_entry": self.default_entry,
            "notes": self.notes,
            "verify": self.verify.as_dict(),
        }

    def rows(self) -> list[tuple[str, Any]]:
        verb = "would change" if self.dry_run else "changed"
        rows: list[tuple[str, Any]] = [
            ("release", self.release),
            ("root", self.root),
            ("verify", self.verify.counts_text()),
            (verb, len(self.changes) or "nothing (already committed)"),
            ("grub.conf", self.grub_conf),
            ("default entry", self.default_entry),
        ]
        return rows + [("note", note) for note in self.notes]


def recorded_trial(workdir: Workdir, system: System) -> dict[str, Any]:
    """The install section of a trial on ``system``; a UserError when there is none."""
    record = workdir.section(SECTION)
    if not record.get(trialboot.TRIAL_KEY):
        raise UserError(
            f"no trial boot is recorded in {workdir.manifest_path}: nothing to commit",
            "run 'invoke install-kernel --trial' (or 'invoke grub --trial'), reboot, "
            "then 'invoke verify --commit'",
        )
    if not same_system(record, system):
        raise UserError(
            f"the trial recorded in {workdir.manifest_path} went into {recorded_flags(record)}, "
            f"not {system.flags}",
            f"run 'invoke verify --commit {recorded_flags(record)}'",
        )
    return record


def healthy_trial_boot(
    settings: Settings, release: str, facts_file: str | Path | None, system: System
) -> Report:
    """Verify's judgement of the running system; a UserError unless it is a healthy TOA boot."""
    expect = expectation(settings, release)
    facts = obtain_facts(settings, facts_file, release, system)
    if facts.release != release:
        raise UserError(
            f"the running kernel is {facts.release or 'unknown'}, not the trial's {release}: "
            "the trial boot did not come up (GRUB has already gone back to the old kernel)",
            "read the console or /var/log/messages of that boot; to try again: 'invoke grub --trial' and "
            "reboot; to give the new kernel up: 'invoke rollback'",
        )
    report = judge(facts, expect, selected=[c for c in select(None) if c.name not in LEFT_OUT])
    failed = [result.name for result in report.results if result.status is Status.FAIL]
    if failed:
        raise UserError(
            f"verify fails ({', '.join(failed)}): the trial kernel is not kept",
            "fix what 'invoke verify' reports and run 'invoke verify --commit' again, or 'invoke rollback' "
            "(the next reboot already boots the old kernel)",
        )
    return report


def commit(
    settings: Settings,
    console: Console,
    *,
    release: str | None = None,
    facts_file: str | Path | None = None,
    dry_run: bool = False,
    euid: int | None = None,
    system: System | None = None,
) -> CommitReport:
    """Make the trial's TOA entry the permanent default after a healthy boot of it."""
    with system_for(settings, system) as target:
        return commit_on(target, settings, console, release, facts_file, dry_run, euid)


def commit_on(
    system: System,
    settings: Settings,
    console: Console,
    release: str | None,
    facts_file: str | Path | None,
    dry_run: bool,
    euid: int | None,
) -> CommitReport:
    workdir = Workdir(Path(settings.workdir))
    record = recorded_trial(workdir, system)
    toa = release or str(record.get("release") or "")
    verify = healthy_trial_boot(settings, toa, facts_file, system)
    problems = preflight.privileges(system, euid) + preflight.inside_root(system)
    planned = trialboot.plan_commit(GrubFile.read(system), toa)
    problem = write_problem(system, planned.grub.path) if planned.plan else None
    preflight.require(problems + ([problem] if problem else []))
    report = CommitReport(release=toa, root=system.root, verify=verify, dry_run=dry_run)
    report.changes = planned.plan.apply(dry_run, echo=console.say)
    report.grub_conf = planned.grub.label
    report.default_entry = planned.edit.entry_index
    if dry_run:
        return report
    installed = InstallRecord(workdir, system, toa)
    record_grub(installed, planned)
    installed.data[trialboot.TRIAL_KEY]["committed_at"] = now_iso()
    installed.save()
    report.notes.append(f"{toa} boots by default from now on; 'invoke rollback' still undoes the install")
    return report
