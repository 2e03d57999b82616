"""``invoke fleet-verify``: ``invoke verify`` on every host at once, one table.

Each host's facts are collected through its System (in parallel, one thread and
one connection per host) and judged here by the same checks as ``invoke
verify``. A host that cannot be reached is a row of its own, not a crash. The
exit code is 0 only when every host passes (PASS or WARN, and every check
could look).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import ToaError
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.fleet.inventory import Host
from toa_kernel.fleet.node import Node
from toa_kernel.verify.checks import Expectation, Status

MAX_THREADS = 32


@dataclass
class HostVerdict:
    name: str
    where: str
    release: str | None = None
    verdict: str = "unreachable"
    exit_code: int = 3
    counts: str = ""
    failing: list[dict[str, str]] = field(default_factory=list)
    error: dict[str, str] | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FleetVerifyReport:
    expect: Expectation
    source: str
    hosts: list[HostVerdict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.hosts) and all(host.exit_code == 0 for host in self.hosts)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "expected_release": self.expect.release,
            "expected_release_source": self.expect.release_source,
            "inventory": self.source,
            "hosts": [host.as_dict() for host in self.hosts],
            "seconds": self.seconds,
        }

    def summary_rows(self) -> list[tuple[str, Any]]:
        passing = sum(1 for host in self.hosts if host.exit_code == 0)
        return [
            ("release", f"{self.expect.release or 'any'} ({self.expect.release_source or 'EXTRAVERSION'})"),
            ("hosts", f"{passing} of {len(self.hosts)} pass ({self.source})"),
            ("seconds", self.seconds),
            ("exit code", self.exit_code),
        ]

    def table(self) -> list[str]:
        header = ("host", "release", "verdict", "checks")
        cells = [(h.name, h.release or "-", h.verdict, h.counts or "-") for h in self.hosts]
        widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
        lines = ["  " + "  ".join(v.ljust(w) for v, w in zip(header, widths)).rstrip()]
        for host, cell in zip(self.hosts, cells):
            lines.append("  " + "  ".join(str(v).ljust(w) for v, w in zip(cell, widths)).rstrip())
            if host.error:
                lines.append(f"      {host.error['message']}")
            for check in host.failing:
                lines.append(f"      {check['status']} {check['check']}: {check['reason']}")
        return lines


def verify_host(
    host: Host, settings: Settings, workdir: Path, expect: Expectation, checks: str | None
) -> HostVerdict:
    verdict = HostVerdict(host.name, host.where)
    started = time.monotonic()
    node = Node(host, settings, workdir)
    try:
        report = node.verify(expect, checks)
        verdict.release = node.running_release()
    except ToaError as exc:
        verdict.error = {"message": exc.message, "fix": exc.fix}
        verdict.exit_code = exc.exit_code if exc.exit_code != 1 else 3
        return verdict
    finally:
        node.close()
        verdict.seconds = round(time.monotonic() - started, 1)
    verdict.verdict = report.verdict_text
    verdict.exit_code = report.exit_code
    verdict.counts = report.counts_text()
    verdict.failing = [
        {"check": r.name, "status": r.status.value, "reason": r.reason}
        for r in report.results
        if r.status in (Status.FAIL, Status.NA)
    ]
    return verdict


def verify_fleet(
    settings: Settings,
    hosts: list[Host],
    expect: Expectation,
    checks: str | None,
    console: Console,
    source: str = "",
) -> FleetVerifyReport:
    """Verify every host in parallel; one row each, in the inventory's order."""
    started = time.monotonic()
    base = Path(settings.workdir) / "fleet" / "verify"
    report = FleetVerifyReport(expect, source)

    def one(host: Host) -> HostVerdict:
        console.say(f"fleet-verify: {host.name} ({host.where})")
        return verify_host(host, settings, base / host.name, expect, checks)

    with ThreadPoolExecutor(max_workers=max(1, min(MAX_THREADS, len(hosts)))) as pool:
        report.hosts = list(pool.map(one, hosts))
    report.seconds = round(time.monotonic() - started, 1)
    return report


def fleet_expectation(settings: Settings, release: str | None) -> Expectation:
    """``--release``, else the release of the recorded build's bundle, else verify's own choice."""
    from dataclasses import replace

    from toa_kernel.fleet.bundle import current_bundle
    from toa_kernel.verify.run import expectation

    expect = expectation(settings, release)
    if release is None and Workdir(Path(settings.workdir)).section("build").get("status") == "ok":
        made = current_bundle(settings)
        if made is not None:
            expect = replace(expect, release=made.release, release_source=f"bundle {made.id}")
    return expect
