"""Running the real ``invoke`` command line of this project in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_DIR


def run_invoke(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``invoke ARGS`` with this checkout's package and tasks; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(PROJECT_DIR), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR), **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )
