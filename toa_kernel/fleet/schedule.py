"""Which hosts go when: a canary batch, then waves, and the failure budget.

Pure functions of the host list and the flags, so the order a rollout takes is
the same on every rerun (a rerun skips the hosts already verified inside each
batch, it does not reshuffle them).

- ``--canary N``: the first N hosts form batch 0; any failure there stops the
  rollout, whatever the budget.
- ``--wave N``: the remaining hosts, N at a time, in order; a wave's hosts run
  in parallel.
- ``--max-failures N`` (hosts) or ``N%`` (of the hosts selected, rounded down):
  the rollout stops after the batch in which the failures went past it;
  ``0`` (the default) stops at the first failure. The batches after it are
  left untouched.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from toa_kernel.core.errors import UserError

BUDGET_RE = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<percent>%)?$")


@dataclass(frozen=True)
class Batch:
    """Hosts that run together: the canary, or wave N."""

    kind: str  # "canary" or "wave"
    number: int
    hosts: tuple[str, ...]

    @property
    def label(self) -> str:
        return "canary" if self.kind == "canary" else f"wave {self.number}"


def batches(hosts: list[str], canary: int, wave: int) -> list[Batch]:
    """The canary batch (when ``canary`` > 0), then waves of ``wave`` hosts."""
    if canary < 0:
        raise UserError(f"--canary {canary}: a number of hosts cannot be negative", "use --canary 1 (or 0)")
    if wave < 1:
        raise UserError(f"--wave {wave}: a wave needs at least one host", "use --wave 1 or more")
    result: list[Batch] = []
    first = hosts[:canary]
    if first:
        result.append(Batch("canary", 0, tuple(first)))
    rest = hosts[canary:]
    for number, start in enumerate(range(0, len(rest), wave), start=1):
        result.append(Batch("wave", number, tuple(rest[start : start + wave])))
    return result


@dataclass(frozen=True)
class Budget:
    """How many failed hosts the rollout tolerates."""

    text: str
    allowed: int

    def exceeded(self, failures: int) -> bool:
        return failures > self.allowed


def failure_budget(text: str, total: int, name: str = "--max-failures") -> Budget:
    """``N`` hosts or ``N%`` of ``total`` (rounded down)."""
    value = str(text).strip()
    match = BUDGET_RE.match(value)
    should = "use a number of hosts (e.g. 0 or 2) or a percentage of the hosts selected (e.g. 10%)"
    if not match:
        raise UserError(f"{name} {text!r} is not a number of hosts or a percentage", should)
    number = float(match.group("number"))
    if match.group("percent"):
        if number > 100:
            raise UserError(f"{name} {text!r}: a percentage above 100", should)
        return Budget(value, math.floor(total * number / 100))
    if not number.is_integer():
        raise UserError(f"{name} {text!r}: a number of hosts is a whole number", should)
    return Budget(value, int(number))
