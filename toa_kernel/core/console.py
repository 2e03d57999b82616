"""Output for people and machines: messages, progress bars, JSON, summaries."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm


class Console:
    """Where a task's messages go. ``quiet`` silences notes and progress bars;
    ``json_mode`` keeps stdout for the final JSON document only."""

    def __init__(self, quiet: bool = False, json_mode: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.json_mode = json_mode
        self.stream = stream

    @property
    def out(self) -> TextIO:
        if self.stream is not None:
            return self.stream
        return sys.stderr if self.json_mode else sys.stdout

    def say(self, text: str) -> None:
        """A line the user should see (unless quiet)."""
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        """A warning: always shown, on stderr."""
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def progress(self, total: int | None, desc: str, unit: str = "B", initial: int = 0) -> tqdm:
        """A tqdm bar; disabled when quiet or when stderr is not a terminal."""
        disable = self.quiet or not sys.stderr.isatty()
        scale = unit == "B"
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            unit_scale=scale,
            unit_divisor=1024 if scale else 1000,
            disable=disable,
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def summary(self, title: str, rows: Iterable[tuple[str, Any]]) -> None:
        """A short aligned block: the one-screen summary at the end of a task."""
        rows = [(str(k), "" if v is None else str(v)) for k, v in rows]
        width = max((len(k) for k, _ in rows), default=0)
        print(title, file=self.out, flush=True)
        for key, value in rows:
            print(f"  {key.ljust(width)}  {value}", file=self.out, flush=True)

    def emit_json(self, document: Any) -> None:
        """The machine-readable result, on stdout."""
        print(json.dumps(document, indent=2, sort_keys=True, default=str), flush=True)
