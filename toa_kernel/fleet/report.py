"""What a person (and a machine) sees of a rollout: live status, final table, JSON.

Live: one line per host, rewritten in place on a terminal (a tqdm line each);
elsewhere (a log, CI) one line per change of a host's status, printed whole under
a lock, so the output of hosts working in parallel never interleaves. The
commands and their output go to each host's ``rollout.log``, never here.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm

from toa_kernel.core.console import Console


class LiveStatus:
    """One status line per host."""

    def __init__(self, console: Console, names: list[str]) -> None:
        self.console = console
        self.width = max((len(name) for name in names), default=4)
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.tty = not console.quiet and not console.json_mode and sys.stderr.isatty()
        self.bars: dict[str, tqdm] = {}
        self.last: dict[str, tuple[str, str]] = {}
        if self.tty:
            for position, name in enumerate(names):
                self.bars[name] = tqdm(
                    total=0, position=position, bar_format="{desc}", leave=True, file=sys.stderr
                )
                self.bars[name].set_description_str(self.line(name, "waiting", ""))

    def line(self, name: str, status: str, detail: str) -> str:
        elapsed = time.monotonic() - self.started
        text = f"{name:<{self.width}}  {status:<12} {detail}".rstrip()
        return f"[{elapsed:6.1f}s] {text}"

    def update(self, name: str, status: str, detail: str = "") -> None:
        with self.lock:
            if self.last.get(name) == (status, detail):
                return  # said already
            self.last[name] = (status, detail)
            if name in self.bars:
                self.bars[name].set_description_str(self.line(name, status, detail))
            elif not self.console.quiet:
                self.console.say(self.line(name, status, detail))

    def say(self, text: str) -> None:
        """A message of the rollout itself, printed above the status lines (never through them)."""
        with self.lock:
            if self.bars:
                tqdm.write(text, file=sys.stderr)
            else:
                self.console.say(text)

    def close(self) -> None:
        with self.lock:
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()


@dataclass
class HostRow:
    """One host in the final table and the JSON document."""

    name: str
    where: str
    batch: str
    status: str = "untouched"
    step: str = ""
    release: str | None = None
    verdict: str = "untouched"
    seconds: float = 0.0
    error: dict[str, Any] | None = None
    failing_checks: list[dict[str, str]] = field(default_factory=list)
    installs: int = 0
    reboots: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, ok=self.ok)


def table(rows: list[HostRow]) -> list[str]:
    """host, step reached, release, verdict, seconds: aligned, with the reason under a failure."""
    header = ("host", "batch", "step", "release", "verdict", "seconds")
    cells = [(r.name, r.batch, r.step or "-", r.release or "-", r.verdict, f"{r.seconds:.1f}") for r in rows]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
    lines = ["  " + "  ".join(str(v).ljust(w) for v, w in zip(header, widths)).rstrip()]
    for row, cell in zip(rows, cells):
        lines.append("  " + "  ".join(str(v).ljust(w) for v, w in zip(cell, widths)).rstrip())
        if row.error:
            lines.append(f"      {row.error.get('message', '')}")
            if row.error.get("fix"):
                lines.append(f"      fix: {row.error['fix']}")
        for check in row.failing_checks:
            lines.append(f"      {check['status']} {check['check']}: {check['reason']}")
    return lines


def print_table(rows: list[HostRow], out: TextIO) -> None:
    for line in table(rows):
        print(line, file=out, flush=True)
