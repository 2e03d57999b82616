"""One lab run: stage ``ROOT/boot``, build the image, install GRUB, boot, judge.

Scenarios: ``default`` boots the image as the root's ``/boot`` is;
``fallback`` leaves the default entry's kernel file out of the image, so GRUB
must fail on it (``Error 15``) and boot the ``fallback=`` entry instead. The
console becomes a facts file (release, command line, grub.conf's entries and
default) judged by verify's boot checks. Artifacts stay in
``WORKDIR/lab/SCENARIO/``: the disk image, the console log, the facts, the
grub shell's transcript and the grub.conf as booted.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.fileops import atomic_write, atomic_write_json, read_text
from toa_kernel.core.layout import BOOT_DIR, GRUB_CONF
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, WorkLock, now_iso
from toa_kernel.lab.bootconf import BootConf, BootEntry, read_boot_conf
from toa_kernel.lab.console import ConsoleReport, last_lines, parse_console
from toa_kernel.lab.grub import install_grub
from toa_kernel.lab.image import LAB_KERNEL_ARGS, Staged, make_image, stage_boot
from toa_kernel.lab.kernel import chosen_kernel
from toa_kernel.lab.ownkernel import guest_runtime
from toa_kernel.lab.qemu import BootRun, run_qemu
from toa_kernel.lab.tools import require_lab_tools
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.checks import Expectation, Status
from toa_kernel.verify.facts import Facts, grub_facts_from_text
from toa_kernel.verify.factsfile import load_facts
from toa_kernel.verify.run import Report, expectation, judge

SCENARIOS = {
    "default": "boot /boot as it is: the default entry must boot",
    "fallback": "leave the default entry's kernel out of the image: GRUB's fallback= entry must boot",
}
BOOT_CHECKS = "boot"
# Booting the system's own kernel proves the module side too.
OWN_KERNEL_CHECKS = "boot,module-loaded,toa-stats,kernel-log"


@dataclass(frozen=True)
class LabPaths:
    """Where one scenario's artifacts go, and the shared kernel cache."""

    base: Path
    kernel_cache: Path

    @classmethod
    def of(cls, workdir: Workdir, scenario: str) -> LabPaths:
        lab = workdir.path / "lab"
        return cls(base=lab / scenario, kernel_cache=lab / "kernel")

    @property
    def stage(self) -> Path:
        return self.base / "stage"

    @property
    def image(self) -> Path:
        return self.base / "disk.img"

    @property
    def console_log(self) -> Path:
        return self.base / "console.log"

    @property
    def facts(self) -> Path:
        return self.base / "facts.json"

    @property
    def grub_log(self) -> Path:
        return self.base / "grub-setup.log"

    @property
    def grub_conf(self) -> Path:
        return self.base / "grub.conf.booted"

    @property
    def lab_edits(self) -> Path:
        return self.base / "grub.conf.lab-edits.diff"

    @property
    def result(self) -> Path:
        return self.base / "result.json"


@dataclass
class LabResult:
    """What a lab run found."""

    scenario: str
    expected: BootEntry | None
    report: ConsoleReport
    judged: Report
    staged: Staged
    seconds: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def booted_entry(self) -> str | None:
        return self.report.booted_title

    @property
    def ok(self) -> bool:
        """The scenario's expectation holds (and, for ``default``, no boot check fails)."""
        if self.expected is None or self.report.release != self.expected.release:
            return False
        if self.own_kernel and self.report.markers.get("uname") != self.expected.release:
            return False
        if self.scenario == "default":
            return self.judged.status is not Status.FAIL
        return True

    @property
    def own_kernel(self) -> bool:
        """The entry that booted ran the root's own kernel, not the stand-in."""
        return self.report.release in self.staged.kept.values()

    @property
    def verdict(self) -> str:
        return "PASS" if self.ok else "FAIL"

    def summary_rows(self) -> list[tuple[str, Any]]:
        """The one-screen summary: what booted, with what, and where the evidence is."""
        expected = self.expected
        rows: list[tuple[str, Any]] = [
            ("booted entry", f"'{self.report.booted_title}' (release {self.report.release})"),
            (
                "expected",
                "unknown" if expected is None else f"'{expected.title}' (release {expected.release})",
            ),
            ("command line", self.report.cmdline),
            ("lab-only", f"{' '.join(LAB_KERNEL_ARGS)} on every kernel line, serial console, timeout=0"),
        ]
        if len(self.report.tried) > 1 or self.report.grub_errors:
            rows.append(("GRUB tried", " -> ".join(f"'{t}'" for t in self.report.tried)))
            rows.append(("GRUB said", "; ".join(self.report.grub_errors)))
        if self.staged.omitted:
            rows.append(("left out", ", ".join(self.staged.omitted)))
        if self.staged.kept:
            rows.append(("own kernels", ", ".join(self.staged.kept)))
            rows.append(("guest uname -r", self.report.markers.get("uname")))
        rows.append(("seconds", ", ".join(f"{k} {v:g}" for k, v in self.seconds.items())))
        rows.extend((name, path) for name, path in self.artifacts.items())
        return rows

    def as_dict(self) -> dict[str, Any]:
        expected = self.expected
        return {
            "scenario": self.scenario,
            "verdict": self.verdict,
            "expected_entry": None
            if expected is None
            else {"index": expected.index, "title": expected.title},
            "expected_release": None if expected is None else expected.release,
            "booted_entry": self.report.booted_title,
            "booted_release": self.report.release,
            "cmdline": self.report.cmdline,
            "tried": self.report.tried,
            "grub_errors": self.report.grub_errors,
            "guest_kernel": self.report.markers.get("uname"),
            "kernels_replaced": self.staged.kernels,
            "kernels_kept": self.staged.kept,
            "initramfs_replaced": self.staged.initramfs,
            "left_out": self.staged.omitted,
            "checks": [r.as_dict() for r in self.judged.results],
            "seconds": self.seconds,
            "artifacts": self.artifacts,
        }


def expected_entry(conf: BootConf, scenario: str) -> BootEntry | None:
    """The entry the scenario should boot."""
    if scenario not in SCENARIOS:
        raise UserError(f"unknown lab scenario {scenario!r}", f"use one of: {', '.join(SCENARIOS)}")
    if scenario == "default":
        return conf.default_entry
    if conf.default_entry is None or conf.fallback_entry is None:
        raise UserError(
            "the fallback scenario needs grub.conf with a numeric default= and a fallback= entry",
            "run 'invoke install-kernel' (it sets fallback= to the previous default)",
        )
    return conf.fallback_entry


def left_out(conf: BootConf, scenario: str) -> list[str]:
    """System paths the scenario leaves out of the image."""
    if scenario != "fallback" or conf.default_entry is None:
        return []
    path = conf.default_entry.kernel_path
    return [path if conf.boot_on_root else BOOT_DIR + path]


def read_grub_conf(root: Root) -> str:
    path = root.resolve(GRUB_CONF)
    if not path.is_file():
        raise UserError(
            f"no {GRUB_CONF} under {root.base}",
            "pass --root with a system 'invoke install-kernel' wrote (it has /boot/grub/grub.conf)",
        )
    return read_text(path)  # byte for byte: a CRLF grub.conf keeps its CRs


def lab_facts(
    report: ConsoleReport, conf_text: str, image: Path, console: str = "", own: bool = False
) -> Facts:
    """The facts the guest's console proves, plus grub.conf as the image holds it.

    ``own``: the root's own kernel booted, so ``uname -r`` is the release and the
    guest's modules, toa_stats and kernel log are facts too.
    """
    facts = Facts(
        source=f"boot lab: console of {image}",
        collected_at=now_iso(),
        release=report.release,
        cmdline=report.cmdline,
        grub=grub_facts_from_text(conf_text, GRUB_CONF),
    )
    if own:
        facts.release = report.markers.get("uname")
        facts.loaded_modules, facts.toa_stats, facts.kernel_log = guest_runtime(console, report.markers)
    return facts


def write_facts(path: Path, facts: Facts, report: ConsoleReport, scenario: str) -> None:
    """The facts JSON (verify reads it with --facts), with the lab's own details under ``lab``."""
    document = facts.to_dict()
    document["lab"] = {
        "scenario": scenario,
        "tried": report.tried,
        "booted_entry": report.booted_title,
        "grub_errors": report.grub_errors,
        "guest_kernel": report.markers.get("uname"),
    }
    atomic_write_json(path, document)


def boot_problem(run: BootRun, report: ConsoleReport, timeout: float, log: Path) -> EnvironmentFailure | None:
    """An error when the boot never reached the lab's /init; None when it did."""
    tail = last_lines(run.output)
    if report.guest_ran:
        return None
    if report.stuck:
        where = f" while booting '{report.tried[-1]}'" if report.tried else ""
        said = f"'{report.grub_errors[-1]}'" if report.grub_errors else "its command line (grub>)"
        return EnvironmentFailure(
            f"GRUB stopped at {said}{where}; a server with this /boot would wait at the console.\n{tail}",
            f"check the entry's kernel/initrd paths and that the files exist; set fallback=; log: {log}",
        )
    if run.timed_out:
        return EnvironmentFailure(
            f"the lab boot did not finish within {timeout:g} s; last console lines:\n{tail}",
            f"raise --timeout (toa.lab_timeout), or read {log}",
        )
    return EnvironmentFailure(
        f"QEMU ended (status {run.returncode}) before the lab's /init reported; last console lines:\n{tail}",
        f"read {log}",
    )


def run_lab(
    root: Root,
    workdir: Workdir,
    *,
    expect: Expectation,
    scenario: str = "default",
    timeout: float = 60.0,
    kernel: Path | None = None,
    keep_stage: bool = False,
    own_kernels: bool = False,
    say: Callable[[str], None] = print,
) -> LabResult:
    """Boot what ``root``'s /boot holds with GRUB legacy under QEMU; judge what booted.

    ``own_kernels``: boot the root's real kernel files as they are (see ``ownkernel``).
    """
    started = time.monotonic()
    require_lab_tools()
    conf_text = read_grub_conf(root)
    conf = read_boot_conf(conf_text)
    expected = expected_entry(conf, scenario)
    paths = LabPaths.of(workdir, scenario)
    paths.base.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    mark = time.monotonic()
    real_kernel = chosen_kernel(kernel, paths.kernel_cache, say)
    seconds["kernel"] = round(time.monotonic() - mark, 2)

    mark = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lab-", dir=paths.base) as scratch:
        staged = stage_boot(
            root,
            paths.stage,
            conf,
            conf_text,
            real_kernel,
            omit=left_out(conf, scenario),
            scratch=Path(scratch),
            own_kernels=own_kernels,
        )
        atomic_write(paths.grub_conf, (staged.boot / "grub" / "grub.conf").read_bytes())
        atomic_write(paths.lab_edits, staged.lab_edits)
        make_image(paths.stage, paths.image, staged.partition)
        install_grub(paths.image, staged.partition, Path(scratch), paths.grub_log)
    if not keep_stage:
        shutil.rmtree(paths.stage, ignore_errors=True)
    seconds["image"] = round(time.monotonic() - mark, 2)

    say(f"lab: booting {paths.image} (scenario {scenario}: {SCENARIOS[scenario]})")
    run = run_qemu(paths.image, paths.console_log, timeout)
    seconds["boot"] = run.seconds
    report = parse_console(run.output)
    own = report.release in staged.kept.values()
    facts = lab_facts(report, conf_text, paths.image, run.output, own)
    write_facts(paths.facts, facts, report, scenario)
    problem = boot_problem(run, report, timeout, paths.console_log)
    if problem is not None:
        raise problem
    judged = judge(load_facts(paths.facts), expect, OWN_KERNEL_CHECKS if own else BOOT_CHECKS)
    seconds["total"] = round(time.monotonic() - started, 2)
    result = LabResult(
        scenario=scenario,
        expected=expected,
        report=report,
        judged=judged,
        staged=staged,
        seconds=seconds,
        artifacts={
            "image": str(paths.image),
            "console_log": str(paths.console_log),
            "facts": str(paths.facts),
            "grub_conf": str(paths.grub_conf),
            "lab_edits": str(paths.lab_edits),
            "grub_log": str(paths.grub_log),
        },
    )
    atomic_write(paths.result, json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
    return result


def lab_for_settings(
    settings: Settings,
    *,
    scenario: str = "default",
    release: str | None = None,
    kernel: Path | None = None,
    keep_stage: bool = False,
    own_kernels: bool = False,
    say: Callable[[str], None] = print,
) -> LabResult:
    """``invoke lab``: the lab on ``settings.root`` with the work directory locked.

    The TOA release expected is ``release``, else the one the manifest records
    (as ``invoke verify`` reads it). ``invoke demo`` calls this too.
    """
    work = Workdir(Path(settings.workdir))
    with WorkLock(work, echo=say):
        return run_lab(
            Root.of(settings.root),
            work,
            expect=expectation(settings, release),
            scenario=scenario,
            timeout=settings.lab_timeout,
            kernel=kernel,
            keep_stage=keep_stage,
            own_kernels=own_kernels,
            say=say,
        )
