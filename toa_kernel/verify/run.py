"""``invoke verify``: facts in, checks run, one screen (or JSON) out.

The expected TOA release comes from ``--release``, else the work directory's
manifest (section ``build``, then ``install``); without one, the checks fall
back to the release named by EXTRAVERSION. Exit codes: 0 when no check FAILs
and every check could look (PASS or WARN), 1 when a check FAILs, 4
(inconclusive) when none FAILs but some could not look (``n/a``: no ``/proc``
under the root, a partial facts file), since that is not a pass; a run in which
no selected check could be judged at all is a usage error (2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import RELEASE_RE
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.system.api import System
from toa_kernel.system.opener import open_system
from toa_kernel.verify.checks import Check, Expectation, Result, Status, overall, run_checks, select
from toa_kernel.verify.facts import SCHEMA_VERSION, Facts, gather
from toa_kernel.verify.factsfile import load_facts
from toa_kernel.verify.module_checks import applies, gather_module_mode, module_mode_checks

REQUIRED_KERNEL_ARGS = ("nohz=off",)
EXIT_FAILED = 1
EXIT_INCONCLUSIVE = 4
MODULE_SET = "module"


@dataclass(frozen=True)
class Report:
    """The outcome of a verify run."""

    facts_source: str
    expect: Expectation
    results: list[Result]

    @property
    def status(self) -> Status:
        return overall(self.results)

    @property
    def inconclusive(self) -> bool:
        """No check failed, but some could not look: not a pass."""
        return self.status is not Status.FAIL and self.count(Status.NA) > 0

    @property
    def exit_code(self) -> int:
        if self.status is Status.FAIL:
            return EXIT_FAILED
        return EXIT_INCONCLUSIVE if self.inconclusive else 0

    @property
    def verdict_text(self) -> str:
        if self.inconclusive:
            return f"{self.status.value}, inconclusive ({self.count(Status.NA)} checks could not look)"
        return self.status.value

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status is status)

    def counts_text(self) -> str:
        return (
            f"{self.count(Status.FAIL)} failed, {self.count(Status.WARN)} warnings, "
            f"{self.count(Status.PASS)} passed, {self.count(Status.NA)} n/a"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "verdict": self.status.value,
            "inconclusive": self.inconclusive,
            "exit_code": self.exit_code,
            "expected_release": self.expect.release,
            "expected_release_source": self.expect.release_source,
            "facts_source": self.facts_source,
            "counts": {status.value: self.count(status) for status in Status},
            "checks": [result.as_dict() for result in self.results],
        }

    def table(self) -> list[str]:
        """The report for people: one line per check, its fix indented below."""
        width = max((len(result.name) for result in self.results), default=0)
        lines = []
        for result in self.results:
            lines.append(f"  {result.status.value:<4}  {result.name:<{width}}  {result.reason}")
            if result.fix and result.status in (Status.FAIL, Status.WARN):
                lines.append(f"  {'':<4}  {'':<{width}}  fix: {result.fix}")
        return lines


def expectation(settings: Settings, release: str | None = None) -> Expectation:
    """What should run: ``--release``, else the manifest's build (or install) release."""
    extra_args = tuple(settings.kernel_args.split())
    common = {
        "extraversion": settings.extraversion,
        "kernel_args": REQUIRED_KERNEL_ARGS + extra_args,
        "option_code": settings.option_code,
    }
    if release:
        if not RELEASE_RE.fullmatch(release):
            raise UserError(
                f"--release {release!r} is not a kernel release name",
                "pass the release 'invoke build' printed, e.g. 2.6.32-toa",
            )
        return Expectation(release=release, release_source="--release", **common)
    workdir = Workdir(Path(settings.workdir))
    for section in ("build", "install"):
        recorded = workdir.section(section).get("release")
        if isinstance(recorded, str) and recorded:
            return Expectation(
                release=recorded, release_source=f"{workdir.manifest_path} ({section})", **common
            )
    return Expectation(**common)


def obtain_facts(
    settings: Settings,
    facts_file: str | Path | None = None,
    release: str | None = None,
    system: System | None = None,
) -> Facts:
    """Facts from ``--facts FILE``, else gathered from the system (``--root``, ``--host``).

    ``release`` (the expected TOA release) is the one whose module and IPv6
    config are inspected, so a fallback boot still shows whether the TOA
    kernel itself is sound; without it, the running release is inspected.
    """
    if facts_file:
        facts = load_facts(facts_file, "--facts")
        if not facts.source:
            facts.source = f"file {facts_file}"
        return facts
    if system is not None:
        return gather(system, release=release)
    with open_system(settings) as opened:
        return gather(opened, release=release)


def judge(
    facts: Facts, expect: Expectation, checks: str | None = None, selected: list[Check] | None = None
) -> Report:
    """Run the selected checks; an error when none of them could be judged."""
    selected = selected if selected is not None else select(checks)
    results = run_checks(selected, facts, expect)
    if all(result.status is Status.NA for result in results):
        raise UserError(
            "none of the selected checks could be judged: the facts lack "
            + "; ".join(sorted({result.reason for result in results})),
            "collect complete facts ('invoke verify --collect') or choose checks the facts cover (--checks)",
        )
    return Report(facts_source=facts.source or "facts", expect=expect, results=results)


def show(report: Report, console: Console, as_json: bool) -> None:
    """Print the table and summary, or the JSON document."""
    if as_json:
        console.emit_json(report.as_dict())
        return
    release = report.expect.release or f"any *{report.expect.extraversion}"
    origin = f" from {report.expect.release_source}" if report.expect.release_source else ""
    print(f"verify: {report.facts_source}, TOA release {release}{origin}", file=console.out, flush=True)
    for line in report.table():
        print(line, file=console.out, flush=True)
    console.summary(
        f"verdict: {report.verdict_text}",
        [("checks", report.counts_text()), ("exit code", report.exit_code)],
    )


def run(
    settings: Settings,
    console: Console,
    *,
    release: str | None = None,
    facts_file: str | Path | None = None,
    collect: bool = False,
    checks: str | None = None,
    as_json: bool = False,
    system: System | None = None,
) -> int:
    """The whole task: returns the exit code. Facts are gathered on the system (over SSH
    with ``--host``) and judged here."""
    if facts_file or system is not None:
        return run_on(system, settings, console, release, facts_file, collect, checks, as_json)
    with open_system(settings) as opened:
        return run_on(opened, settings, console, release, facts_file, collect, checks, as_json)


def run_on(
    system: System | None,
    settings: Settings,
    console: Console,
    release: str | None,
    facts_file: str | Path | None,
    collect: bool,
    checks: str | None,
    as_json: bool,
) -> int:
    expect = expectation(settings, release)
    facts = obtain_facts(settings, facts_file, expect.release, system)
    if collect:
        console.emit_json(facts.to_dict())
        return 0
    report = judge(facts, expect, checks, module_mode(system, facts, facts_file, checks))
    show(report, console, as_json)
    return report.exit_code


def module_mode(
    system: System | None, facts: Facts, facts_file: str | Path | None, checks: str | None
) -> list[Check] | None:
    """The module-mode checks (kernels 3.0+, out-of-tree toa.ko) when they apply.

    ``--checks module`` asks for them; without ``--checks`` they replace the
    kernel checks when the running kernel is 3.0 or later or an ``extra/toa.ko``
    is installed. A facts file carries no module facts: those checks say n/a.
    """
    if checks not in (None, "", MODULE_SET):
        return None
    mode = None if facts_file or system is None else gather_module_mode(system, facts.release)
    if checks == MODULE_SET or (mode is not None and applies(facts, mode)):
        return module_mode_checks(mode)
    return None
