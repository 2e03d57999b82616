"""``invoke install-kernel`` and ``invoke grub``: install the TOA kernel and boot it.

Order, chosen so that a failure at any point leaves a system that boots its old
kernel: preflight (nothing written) -> modules and kernel files (installkernel
adds an entry but keeps the old default) -> checks of what was installed ->
boot hooks (harmless on other kernels) -> grub.conf (the step that makes the new
kernel boot, with ``fallback=`` on the old one). Each step is a plan of only the
changes needed, so a second run changes nothing; ``--dry-run`` prints the plans.

What was done is recorded in the manifest section ``install`` as it happens
(release, grub.conf backup, previous default entry, files and hooks added) so
that ``invoke rollback`` can undo it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.boot import grubconf, preflight
from toa_kernel.boot import hooks as boothooks
from toa_kernel.boot import trial as trialboot
from toa_kernel.boot.grubstep import (
    GrubFile,
    GrubPlan,
    boot_entry_policy,
    entry_identity,
    kernel_args,
    plan_edit,
    sha256_text,
    write_problem,
)
from toa_kernel.boot.kernelfiles import (
    CommandLog,
    KernelFiles,
    check_installed,
    plan_kernel_files,
    root_installkernel,
)
from toa_kernel.boot.preflight import BuildArtifacts
from toa_kernel.core.console import Console
from toa_kernel.core.errors import ToaError, UserError
from toa_kernel.core.layout import BOOT_DIR, MODULES_DIR
from toa_kernel.core.plan import Plan
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.system.api import FileStat, System
from toa_kernel.system.files import read_system_text
from toa_kernel.system.opener import open_system
from toa_kernel.system.runtime import read_text

SECTION = "install"
SAVED_DEFAULT = "/boot/grub/default"


@dataclass(frozen=True)
class InstallRequest:
    """The flags of install-kernel besides the settings (root, startup, kernel args)."""

    release: str | None = None
    force: bool = False
    initramfs: bool = True
    dry_run: bool = False
    take_over_hooks: bool = False
    trial: bool = False  # boot the new kernel once; GRUB returns to the old one by itself


@dataclass
class InstallReport:
    """What install-kernel (or grub) did, or would do with ``--dry-run``."""

    release: str
    root: str
    dry_run: bool = False
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    grub_conf: str | None = None
    grub_backup: str | None = None
    default_entry: int | None = None
    fallback_entry: int | None = None
    files_added: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    trial: str | None = None  # what the trial boots, when --trial

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def rows(self) -> list[tuple[str, Any]]:
        verb = "would change" if self.dry_run else "changed"
        rows: list[tuple[str, Any]] = [
            ("release", self.release),
            ("root", self.root),
            (verb, len(self.changes) or "nothing (already done)"),
            ("grub.conf", self.grub_conf),
            ("default entry", self.default_entry),
            ("fallback entry", self.fallback_entry),
            ("grub.conf backup", self.grub_backup or "-"),
            ("boot hooks", ", ".join(self.hooks) or "-"),
        ]
        if self.trial:
            rows.insert(4, ("trial", self.trial))
        rows += [("note", note) for note in self.notes]
        return rows


def recorded_flags(record: dict[str, Any]) -> str:
    """The flags naming the system a manifest record was made on."""
    host = record.get("host") or ""
    return (f"--host {host} " if host else "") + f"--root {record.get('root')}"


def same_system(record: dict[str, Any], system: System) -> bool:
    """True when a manifest record (with ``root`` and ``host``) was made on ``system``."""
    return record.get("root") in (None, system.root) and (record.get("host") or "") == system.host


class InstallRecord:
    """The manifest section ``install``, saved after every step.

    The first grub.conf backup and the first previous default entry are kept
    across runs: rollback returns to the system as it was before any install.
    """

    def __init__(self, workdir: Workdir, system: System, release: str) -> None:
        self.workdir = workdir
        existing = workdir.section(SECTION)
        if existing and not same_system(existing, system):
            raise UserError(
                f"{workdir.manifest_path} records an install into {recorded_flags(existing)}, "
                "not rolled back",
                f"run 'invoke rollback {recorded_flags(existing)}' first, or use another --workdir",
            )
        self.system = system
        self.data: dict[str, Any] = {"files_added": [], "hooks": [], "grub": {}, "started_at": now_iso()}
        self.data.update(existing)
        self.data.update(root=system.root, host=system.host, release=release)

    @property
    def grub(self) -> dict[str, Any]:
        return self.data.setdefault("grub", {})

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        self.workdir.update_manifest(SECTION, self.data)

    def add_files(self, paths: list[str]) -> None:
        self.data["files_added"] = sorted(set(self.data.get("files_added") or []) | set(paths))

    def grub_after_installkernel(self) -> None:
        """Remember grub.conf as the system's installkernel (grubby) left it, before grub.conf is
        edited here: while it stays so, rollback gives back the backup taken before installkernel,
        and installkernel's entry goes with it."""
        path = self.grub.get("path")
        if not path or self.grub.get("written_sha256"):
            return
        with contextlib.suppress(OSError, ToaError):  # never hides the failure being reported
            self.grub["installkernel_sha256"] = sha256_text(read_system_text(self.system, str(path)))
        self.save()

    def take_over(self, system_path: str, backup: str, st: FileStat) -> None:
        """Remember a hook file that was not ours, as it was (the first backup wins)."""
        taken = self.data.setdefault("taken_over", {})
        if system_path not in taken:
            taken[system_path] = {"backup": backup, "mode": st.mode, "uid": st.uid, "gid": st.gid}
        self.save()


def saved_default(system: System) -> int | None:
    """The entry GRUB's ``savedefault`` recorded (for ``default=saved``)."""
    text = read_text(system, SAVED_DEFAULT, limit=64)
    return None if text is None else grubconf.parse_saved_default(text)  # savedefault leaves "N\0\n..."


def grub_edit_plan(
    system: System, settings: Settings, release: str, initramfs: bool, trial: bool = False
) -> GrubPlan:
    """The grub.conf edit for ``release`` on the file as it is now (``trial``: boot it once)."""
    initrd = boot_entry_policy(settings).initrd_name(release) if initramfs else ""
    grub, args, saved = GrubFile.read(system), kernel_args(settings), saved_default(system)
    if trial:
        return trialboot.plan_trial(grub, release, args, initrd, saved, settings.trial_panic)
    return plan_edit(grub, release, args, initrd, saved)


def check_grub(
    system: System, settings: Settings, release: str, initramfs: bool, trial: bool = False
) -> tuple[GrubPlan | None, list[ToaError]]:
    """Preflight of the grub.conf step: found, parseable, editable, writable."""
    try:
        planned = grub_edit_plan(system, settings, release, initramfs, trial)
    except UserError as exc:
        return None, [exc]
    problem = write_problem(system, planned.grub.path)
    return planned, [problem] if problem else []


def record_grub(record: InstallRecord, planned: GrubPlan) -> None:
    """Remember what rollback needs: first backup, previous entry, what was written."""
    grub = record.grub
    grub.setdefault("path", planned.grub.label)
    if planned.backups and not grub.get("backup"):
        grub["backup"] = planned.backups[0]
    edit = planned.edit
    if edit.changed and "previous_entry" not in grub:
        previous = edit.previous_default if edit.previous_default != edit.entry_index else None
        grub["previous_entry"] = entry_identity(grubconf.parse(edit.text), previous)
        grub["previous_fallback"] = edit.previous_fallback
    grub["entry_index"] = edit.entry_index
    grub["added_entry"] = bool(grub.get("added_entry")) or edit.added_entry
    grub["written_sha256"] = planned.written_sha256
    trial = record.data.get(trialboot.TRIAL_KEY)
    if isinstance(planned, trialboot.TrialPlan):
        record.data[trialboot.TRIAL_KEY] = trialboot.trial_record(planned, trial)
    elif trial and edit.ended_trial:
        trial["ended_at"] = now_iso()  # a plain edit made the trial entry the default


def describe_grub(planned: GrubPlan, report: InstallReport) -> None:
    report.grub_conf = planned.grub.label
    report.notes += list(planned.edit.notes or [])
    if planned.backups:
        report.grub_backup = planned.backups[0]
    config = grubconf.parse(planned.edit.text)
    report.default_entry = grubconf.default_index(config)
    report.fallback_entry = config.fallback
    if isinstance(planned, trialboot.TrialPlan):
        report.default_entry = planned.edit.entry_index
        report.trial = trialboot.trial_summary(planned.edit)
        report.notes += trialboot.trial_notes(planned.edit)[1:]


def apply_grub(planned: GrubPlan, record: InstallRecord, report: InstallReport, console: Console) -> None:
    report.changes += planned.plan.apply(False, echo=console.say)
    record_grub(record, planned)
    record.save()
    describe_grub(planned, report)
    report.grub_backup = existing_backup(planned.grub.system, record, report)


def is_file(system: System, path: str) -> bool:
    found = system.stat(path)
    return found is not None and found.kind == "file"


def existing_backup(system: System, record: InstallRecord, report: InstallReport) -> str | None:
    """The backup rollback will use, named only while it exists (else this run's, or none)."""
    recorded = record.grub.get("backup")
    if recorded and is_file(system, str(recorded)):
        return str(recorded)
    if recorded:
        report.notes.append(
            f"the grub.conf backup {recorded} taken before the first install is gone: rollback can only "
            "point default= back"
        )
    made = report.grub_backup
    return made if made and is_file(system, made) else None


def kernel_problems(
    system: System, artifacts: BuildArtifacts, request: InstallRequest, kernel_plan: Plan, grub_size: int
) -> list[ToaError]:
    """Checks that matter only when kernel files must be installed."""
    if not kernel_plan:
        return []
    local_make = ["make"] if artifacts.modules_tree is None else []
    problems = preflight.tools(local_make) + preflight.system_tools(system, ["depmod"])
    if root_installkernel(system) is None and request.initramfs:
        problems.append(
            UserError(
                f"{system.label} has no executable /sbin/installkernel, so no initramfs would be made",
                "install the system's installkernel (yum install dracut grubby), or pass --no-initramfs "
                "if this kernel boots without one",
            )
        )
    needs = [
        preflight.boot_need(system, artifacts, request.initramfs, grub_size),
        preflight.modules_need(artifacts),
    ]
    return problems + preflight.free_space(system, needs)


@contextlib.contextmanager
def system_for(settings: Settings, system: System | None) -> Iterator[System]:
    """The System a step acts on: the one given, else the one the settings name (closed after)."""
    if system is not None:
        yield system
        return
    with open_system(settings) as opened:
        yield opened


def install_kernel(
    settings: Settings,
    request: InstallRequest,
    console: Console | None = None,
    euid: int | None = None,
    system: System | None = None,
) -> InstallReport:
    """Install the built TOA kernel on the system (``settings``' root and host) and make it the default."""
    with system_for(settings, system) as target:
        return install_on(target, settings, request, console or Console(), euid)


def install_on(
    system: System, settings: Settings, request: InstallRequest, console: Console, euid: int | None
) -> InstallReport:
    workdir = Workdir(settings.workdir)
    artifacts = preflight.build_artifacts(workdir, request.release)
    release = boothooks.check_release(artifacts.release)
    files = KernelFiles(system, release)
    log = CommandLog(workdir.logs / f"install-{release}.log")
    stage = workdir.path / "stage" / release

    problems = (
        preflight.privileges(system, euid) + preflight.directories(system) + preflight.inside_root(system)
    )
    problems += preflight.not_running(system, release, request.force)
    problems += boothooks.problems(system, settings.startup, request.take_over_hooks)
    planned_grub, grub_problems = check_grub(system, settings, release, request.initramfs, request.trial)
    problems += grub_problems
    kernel_plan = plan_kernel_files(files, artifacts, request.initramfs, log, stage)
    grub_size = len(planned_grub.grub.text.encode(errors="surrogateescape")) if planned_grub else 0
    problems += kernel_problems(system, artifacts, request, kernel_plan, grub_size)
    preflight.require(problems)
    assert planned_grub is not None
    record = InstallRecord(workdir, system, release)
    report = InstallReport(release=release, root=system.root, dry_run=request.dry_run)
    if request.dry_run:
        return dry_run(system, settings, kernel_plan, planned_grub, report, console)

    install_files(files, artifacts, request, log, stage, planned_grub.grub, record, report, console)
    hooks = boothooks.plan_install(system, release, settings.startup, on_backup=record.take_over)
    report.changes += hooks.apply(False, echo=console.say)
    report.hooks = boothooks.installed(system)
    record.save(status="boot hooks installed", startup=settings.startup, hooks=report.hooks)
    planned = grub_edit_plan(system, settings, release, request.initramfs, request.trial)
    apply_grub(planned, record, report, console)
    record.save(status="ok", finished_at=now_iso())
    return report


def install_files(
    files: KernelFiles,
    artifacts: BuildArtifacts,
    request: InstallRequest,
    log: CommandLog,
    stage: Path,
    grub: GrubFile,
    record: InstallRecord,
    report: InstallReport,
    console: Console,
) -> None:
    """Modules and kernel onto the system, then check what landed."""
    before = files.present()
    installkernel_ran: list[bool] = []

    def backup_grub() -> None:
        # installkernel (grubby) edits grub.conf: keep the file as it was before.
        backup = grub.system.backup(grub.path)
        if not record.grub.get("backup"):
            record.grub.update(path=grub.label, backup=backup)
        installkernel_ran.append(True)
        record.save()

    plan = plan_kernel_files(
        files, artifacts, request.initramfs, log, stage, before_installkernel=backup_grub
    )
    if plan:
        record.save(status="installing kernel files")
    try:
        report.changes += plan.apply(False, echo=console.say)
    except ToaError as exc:
        left = [path for path in files.present() if path not in before]
        if left:
            exc.message += (
                f"\nleft behind: {', '.join(left)}; grub.conf does not boot them (the old kernel is still "
                "the default)"
            )
            exc.fix = (
                f"{exc.fix.rstrip('.')}; then run 'invoke install-kernel' again (it goes on from there), "
                "or 'invoke rollback' to remove what was left behind"
            ).lstrip("; ")
        raise
    finally:
        report.files_added = [path for path in files.present() if path not in before]
        record.add_files(report.files_added)
        record.save()
        if installkernel_ran:
            record.grub_after_installkernel()
    report.notes += check_installed(files, artifacts, request.initramfs, log)
    record.save(status="kernel files installed")


def dry_run(
    system: System,
    settings: Settings,
    kernel_plan: Plan,
    planned_grub: GrubPlan,
    report: InstallReport,
    console: Console,
) -> InstallReport:
    """Print the three plans; change nothing."""
    report.changes += kernel_plan.apply(True, echo=console.say)
    hooks = boothooks.plan_install(system, report.release, settings.startup)
    report.changes += hooks.apply(True, echo=console.say)
    if root_installkernel(system) is not None and any(change.command for change in kernel_plan):
        report.notes.append(
            "installkernel adds its own grub.conf entry first; the diff shown is for grub.conf as it is now"
        )
    report.changes += planned_grub.plan.apply(True, echo=console.say)
    describe_grub(planned_grub, report)
    report.hooks = boothooks.installed(system)
    return report


def grub_release(workdir: Workdir, release: str | None) -> str:
    """``--release``, else the release of the last build."""
    release = release or str(workdir.section("build").get("release") or "")
    if not release:
        raise UserError(
            "which release? no --release and no build recorded in the work directory",
            "pass --release RELEASE (e.g. 2.6.32-toa), as 'ls /boot/vmlinuz-*' shows",
        )
    return boothooks.check_release(release)


def configure_grub(
    settings: Settings,
    release: str | None = None,
    dry_run: bool = False,
    console: Console | None = None,
    euid: int | None = None,
    trial: bool = False,
    system: System | None = None,
) -> InstallReport:
    """``invoke grub``: only the grub.conf step, for a release already in /boot (``trial``: once)."""
    with system_for(settings, system) as target:
        return grub_on(target, settings, release, dry_run, console or Console(), euid, trial)


def grub_on(
    system: System,
    settings: Settings,
    release: str | None,
    dry_run: bool,
    console: Console,
    euid: int | None,
    trial: bool,
) -> InstallReport:
    workdir = Workdir(settings.workdir)
    release = grub_release(workdir, release)
    files = KernelFiles(system, release)
    problems = preflight.privileges(system, euid) + preflight.inside_root(system)
    if not files.is_file(files.vmlinuz):
        problems.append(
            UserError(
                f"{BOOT_DIR}/vmlinuz-{release} does not exist on {system.label}: GRUB could not boot it",
                "run 'invoke install-kernel' (it installs the kernel, then edits grub.conf)",
            )
        )
    initramfs = files.is_file(files.initramfs)
    planned, grub_problems = check_grub(system, settings, release, initramfs, trial)
    preflight.require(problems + grub_problems)
    assert planned is not None
    record = InstallRecord(workdir, system, release)
    report = InstallReport(release=release, root=system.root, dry_run=dry_run)
    if not initramfs:
        report.notes.append(f"no {BOOT_DIR}/initramfs-{release}.img: an added entry gets no initrd line")
    if not files.toa_modules():
        report.notes.append(f"no toa.ko under {MODULES_DIR}/{release}: that kernel runs without TOA")
    if dry_run:
        report.changes += planned.plan.apply(True, echo=console.say)
        describe_grub(planned, report)
        return report
    apply_grub(planned, record, report, console)
    return report
