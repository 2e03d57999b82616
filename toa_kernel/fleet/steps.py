"""The boot steps a rollout runs on a host: the same code as the single-host tasks.

- ``configure_boot``: what ``invoke install-kernel`` does once the kernel files
  are in place: boot hooks, then grub.conf (the TOA entry the default, with
  ``nohz=off`` and ``fallback=`` on the old kernel), recorded in the host's
  work directory. The host's work directory records the bundle as its build
  (its files unpacked on this machine), so install-kernel finds the kernel files
  already installed and changes only hooks and grub.conf.
- ``roll_back``: ``invoke rollback`` with that host's record.
- ``gather_facts`` / ``judge_facts``: ``invoke verify``'s facts and checks.
- ``InstallBooks``: the install record's bookkeeping around the host's own
  installkernel (grub.conf backed up before grubby edits it; the kernel files
  it added, which a rollback of an unfinished install removes).
"""

from __future__ import annotations

from pathlib import Path

from toa_kernel.boot.grubstep import locate
from toa_kernel.boot.hooks import plan_install
from toa_kernel.boot.install import (
    InstallRecord,
    InstallReport,
    InstallRequest,
    grub_edit_plan,
    install_kernel,
)
from toa_kernel.boot.kernelfiles import KernelFiles
from toa_kernel.boot.rollback import RollbackReport, rollback
from toa_kernel.core.console import Console
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.fleet.bundle import Bundle, build_section
from toa_kernel.system.api import System
from toa_kernel.verify.checks import Expectation
from toa_kernel.verify.facts import Facts, gather
from toa_kernel.verify.run import Report, judge


def host_settings(system: System, settings: Settings, workdir: Path) -> Settings:
    """The settings of the single-host tasks for this host: its root, its work directory."""
    return settings.with_(root=Path(system.root), workdir=workdir)


class InstallBooks:
    """The host's install record around its own installkernel."""

    def __init__(self, system: System, settings: Settings, workdir: Path, release: str) -> None:
        self.system = system
        self.workdir = Workdir(workdir).ensure()
        self.release = release
        self.files = KernelFiles(system, release)
        self.before = self.files.present()
        self.installkernel_ran = False

    def record(self) -> InstallRecord:
        return InstallRecord(self.workdir, self.system, self.release)

    def before_installkernel(self) -> None:
        """Back grub.conf up (grubby edits it) and remember the first backup for rollback."""
        record = self.record()
        grub = locate(self.system)
        if grub is not None and not record.grub.get("backup"):
            record.grub.update(path=grub, backup=self.system.backup(grub))
        self.installkernel_ran = True
        record.save(status="installing kernel files")

    def files_added(self) -> None:
        """Record the release's files that were not there before (a rollback of an unfinished
        install removes them)."""
        record = self.record()
        record.add_files([path for path in self.files.present() if path not in self.before])
        record.save()
        if self.installkernel_ran:
            record.grub_after_installkernel()


def configure_boot(
    system: System, settings: Settings, workdir: Path, bundle: Bundle, console: Console
) -> InstallReport:
    """install-kernel's boot hooks and grub.conf step for the bundle's release on this host."""
    Workdir(workdir).ensure().update_manifest("build", build_section(bundle))
    request = InstallRequest(release=bundle.release)
    return install_kernel(host_settings(system, settings, workdir), request, console, system=system)


def preview_boot(system: System, settings: Settings, bundle: Bundle, console: Console) -> None:
    """What install-kernel's boot hooks and grub.conf step would change (printed, nothing written)."""
    plan_install(system, bundle.release, settings.startup).apply(True, echo=console.say)
    grub_edit_plan(system, settings, bundle.release, initramfs=True).plan.apply(True, echo=console.say)


def roll_back(system: System, settings: Settings, workdir: Path, console: Console) -> RollbackReport:
    """``invoke rollback`` for this host's recorded install."""
    return rollback(host_settings(system, settings, workdir), console=console, system=system)


def gather_facts(system: System, release: str | None) -> Facts:
    facts = gather(system, release=release)
    facts.source = system.label
    return facts


def judge_facts(facts: Facts, expect: Expectation, checks: str | None) -> Report:
    return judge(facts, expect, checks)
