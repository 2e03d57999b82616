"""Facts -> plan -> apply.

Every step computes the changes it needs from what it sees (the facts), as a
``Plan`` of ``Change`` objects. ``--dry-run`` prints the plan (commands, and
unified diffs for file edits) and changes nothing; a real run applies it. A step
whose plan is empty has nothing to do, which is what makes steps idempotent.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toa_kernel.core.fileops import atomic_write, encode_text, lines_of, read_text


def unified_diff(old: str, new: str, label: str) -> str:
    """A unified diff of two texts, labelled like ``diff -u a/label b/label``."""
    lines = difflib.unified_diff(
        lines_of(old),
        lines_of(new),
        fromfile=f"a/{label}",
        tofile=f"b/{label}",
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


@dataclass
class Change:
    """One change a step wants to make.

    ``summary`` is what a person reads ("toa.h: TCPOPT_TOA 200 -> 254"),
    ``diff`` the unified diff of a file edit, ``command`` the argv of a command
    to run; ``action`` carries it out.
    """

    summary: str
    action: Callable[[], object]
    diff: str = ""
    command: Sequence[str] | None = None

    def describe(self) -> str:
        text = self.summary
        if self.command:
            text += f"\n    $ {shlex.join(self.command)}"
        if self.diff:
            text += "\n" + "".join(f"    {line}" for line in self.diff.splitlines(keepends=True))
        return text.rstrip("\n")


@dataclass
class Plan:
    """An ordered list of changes with a name for reporting."""

    name: str
    changes: list[Change] = field(default_factory=list)

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def add(self, change: Change | None) -> None:
        if change is not None:
            self.changes.append(change)

    def apply(self, dry_run: bool, echo: Callable[[str], None] = print) -> list[str]:
        """Print and (unless ``dry_run``) apply each change; return the summaries."""
        if not self.changes:
            echo(f"{self.name}: nothing to do")
            return []
        prefix = "would " if dry_run else ""
        for change in self.changes:
            echo(f"{self.name}: {prefix}{change.describe()}")
            if not dry_run:
                change.action()
        return [change.summary for change in self.changes]


def file_edit(
    path: Path,
    new_text: str,
    summary: str,
    *,
    label: str | None = None,
    mode: int | None = None,
    before: Callable[[], object] | None = None,
) -> Change | None:
    """A ``Change`` that atomically replaces ``path`` by ``new_text``.

    The file is compared and written byte for byte (``fileops.read_text``):
    lines the edit does not touch keep their endings and bytes. Returns ``None``
    when the file already holds exactly ``new_text``: nothing to do. ``before``
    runs first (a backup, for example).
    """
    try:
        old_text: str | None = read_text(path)
    except FileNotFoundError:
        old_text = None
    if old_text == new_text:
        return None

    def write() -> None:
        if before is not None:
            before()
        atomic_write(path, encode_text(new_text), mode=mode)

    return Change(
        summary=summary, action=write, diff=unified_diff(old_text or "", new_text, label or str(path))
    )
