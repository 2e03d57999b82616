"""What the running system says: /proc files, loaded modules, the kernel log.

Small readers shared by verify's facts and the module steps; every read goes
through a ``System``, so a sandbox root holding a ``proc/`` tree, this machine
and a server over SSH work the same.
"""

from __future__ import annotations

import os
import re
import stat
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toa_kernel.core.errors import EnvironmentFailure, ToaError
from toa_kernel.core.layout import PROC_MODULES
from toa_kernel.system.api import NotRegularFile, System

LOG_FILES = ("/var/log/dmesg", "/var/log/messages")
LOG_PATTERN = re.compile(r"\btoa\b", re.IGNORECASE)
LOG_KEEP = 40
LOG_TAIL_BYTES = 32 * 1024 * 1024
# /proc files and the like are small; more than this is not what they should hold.
MAX_TEXT = 8 * 1024 * 1024


@dataclass
class KernelLog:
    """Kernel log lines that mention TOA, and where they were read."""

    sources: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    problem: str = ""


def read_text(system: System, system_path: str, limit: int | None = None) -> str | None:
    """A file's text, at most ``limit`` bytes of it (default ``MAX_TEXT``); ``None`` when it is
    missing, unreadable or not a regular file (a FIFO or device under a root is never read)."""
    return system.read_text(system_path, limit or MAX_TEXT)


def read_loaded_modules(system: System) -> list[str] | None:
    """Names of loaded modules (first column of ``/proc/modules``)."""
    text = read_text(system, PROC_MODULES)
    if text is None:
        return None
    return [line.split()[0] for line in text.splitlines() if line.split()]


def read_kernel_log(system: System, dmesg: Callable[[], str] | None = None) -> KernelLog:
    """Lines mentioning TOA: ``dmesg`` on the live system, log files under another root."""
    log = KernelLog()
    if system.is_live:
        try:
            text = dmesg() if dmesg is not None else run_dmesg(system)
        except ToaError as exc:
            log.problem = exc.message
        else:
            log.sources.append("dmesg")
            log.lines = matching_lines(text.splitlines())
            return log
    for system_path in LOG_FILES:
        try:
            data = system.read_tail(system_path, LOG_TAIL_BYTES)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, NotRegularFile):
            continue
        except PermissionError:
            log.problem = f"cannot read {system_path} (permission denied)"
            continue
        log.sources.append(system_path)
        log.lines.extend(matching_lines(lines_of_tail(data, LOG_TAIL_BYTES)))
    log.lines = log.lines[-LOG_KEEP:]
    if not log.sources and not log.problem:
        log.problem = "no kernel log found (" + ", ".join(LOG_FILES) + ")"
    return log


def lines_of_tail(data: bytes, size: int) -> list[str]:
    """The lines of a file's last ``size`` bytes: a first line cut in two is dropped."""
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if len(data) >= size and lines else lines


def run_dmesg(system: System) -> str:
    """The live kernel ring buffer of that system."""
    if system.which("dmesg") is None:
        raise EnvironmentFailure(f"the dmesg command is not installed on {system.label}")
    result = system.run(["dmesg"], timeout=30)
    if not result.ok:
        raise EnvironmentFailure(
            f"dmesg failed: {result.err.strip() or 'exit status ' + str(result.returncode)}"
        )
    return result.out


def tail_lines(path: Path) -> list[str]:
    """The lines of the last ``LOG_TAIL_BYTES`` of a (possibly huge) log file.

    Only a regular file is read (a FIFO or a device there is "not found"), never more
    than ``LOG_TAIL_BYTES``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(path)
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - LOG_TAIL_BYTES)
        handle.seek(start)
        data = handle.read(LOG_TAIL_BYTES)
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if start and lines else lines


def matching_lines(lines: Iterable[str]) -> list[str]:
    kept: deque[str] = deque(maxlen=LOG_KEEP)
    for line in lines:
        if LOG_PATTERN.search(line):
            kept.append(line.rstrip())
    return list(kept)
