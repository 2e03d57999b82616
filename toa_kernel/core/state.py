"""The work directory: its layout, the state manifest and the run lock.

The manifest (``manifest.json``) records what each step produced (URL, size,
sha256 and tree path of the source; release and artifacts of the build; what
install changed) so later steps can trust it. It is always written atomically.

Two locks keep runs from interleaving, both ``flock`` (the kernel releases it
when the holder dies, so a stale lock file is simply taken over): ``.lock`` in
the work directory, and ``ROOT/var/lock/toa-kernel.lock`` on the system a task
changes, so two runs with different work directories never change one system
at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from toa_kernel.core.errors import LockHeld, UserError
from toa_kernel.core.fileops import atomic_write_json, disk_error

MANIFEST_FIX = (
    "repair it by hand ('python3 -m json.tool FILE' shows where it breaks) and keep it: it records what "
    "install-kernel and install-module changed, which rollback and rollback-module need; only when nothing "
    "is installed may it be moved aside (the steps are then run again from fetch)"
)


@dataclass(frozen=True)
class Workdir:
    """Paths inside the work directory."""

    path: Path

    @property
    def downloads(self) -> Path:
        return self.path / "downloads"

    @property
    def src(self) -> Path:
        return self.path / "src"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def builds(self) -> Path:
        return self.path / "builds"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def ensure(self) -> Workdir:
        """Create the work directory and its sub-directories."""
        for directory in (self.path, self.downloads, self.src, self.logs, self.builds):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise disk_error(exc, directory) from exc
        return self

    def load_manifest(self) -> dict[str, Any]:
        """The manifest's content; an empty dict when there is none yet."""
        try:
            text = self.manifest_path.read_bytes().decode("utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(
                f"cannot read the state manifest {self.manifest_path}: {exc}", MANIFEST_FIX
            ) from None
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise UserError(
                f"the state manifest {self.manifest_path} is not valid JSON ({exc})", MANIFEST_FIX
            ) from None
        if not isinstance(document, dict):
            raise UserError(f"the state manifest {self.manifest_path} is not a JSON object", MANIFEST_FIX)
        return document

    def section(self, name: str) -> dict[str, Any]:
        """One section of the manifest (``fetch``, ``build``, ``install``)."""
        value = self.load_manifest().get(name) or {}
        return value if isinstance(value, dict) else {}

    def update_manifest(self, name: str, data: dict[str, Any] | None) -> None:
        """Replace one section (``None`` removes it), atomically."""
        document = self.load_manifest()
        if data is None:
            document.pop(name, None)
        else:
            document[name] = data
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, self.manifest_path) from exc
        atomic_write_json(self.manifest_path, document)


def now_iso() -> str:
    """Current UTC time as ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock:
    """An exclusive, non-blocking ``flock`` on one file (re-entrant per process).

    The lock file records the holder (``pid command``), so a second run names it;
    the kernel frees the lock when its holder dies, and the next run takes it over.
    """

    _held: ClassVar[dict[str, int]] = {}
    _fds: ClassVar[dict[str, int]] = {}
    _mutex = threading.Lock()
    # What the lock guards, for the message a second run prints.
    guards = "the lock"

    def __init__(self, path: Path, echo: Any = None) -> None:
        self.path = Path(path)
        self.echo = echo or (lambda text: print(text, file=sys.stderr))

    def prepare(self) -> None:
        """Create the lock's directory when it is missing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UserError(
                f"{self.path.parent} is a file, not a directory: the lock {self.path.name} cannot live there",
                f"move {self.path.parent} aside",
            ) from None
        except OSError as exc:
            raise disk_error(exc, self.path) from exc

    def open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except IsADirectoryError:
            raise UserError(
                f"the lock file {self.path} is a directory", f"remove the directory {self.path}"
            ) from None
        except OSError as exc:
            raise disk_error(exc, self.path) from exc

    def __enter__(self) -> FileLock:
        self.prepare()
        key = str(self.path.resolve())
        self.key = key
        with self._mutex:
            if self._held.get(key):
                self._held[key] += 1
                return self
            fd = self.open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(fd)
                os.close(fd)
                raise LockHeld(
                    f"another toa-kernel run holds {self.guards} {self.path} ({holder})",
                    "wait for it to finish; the lock frees itself when that process exits",
                ) from None
            old_pid = recorded_pid(fd)
            if old_pid and old_pid != os.getpid() and not pid_alive(old_pid):
                self.echo(f"note: took over a stale lock left by dead process {old_pid}")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {' '.join(sys.argv)[:200]}\n".encode(), 0)
            self._fds[key] = fd
            self._held[key] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            self._held[self.key] -= 1
            if self._held[self.key] == 0:
                fd = self._fds.pop(self.key)
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                del self._held[self.key]


class WorkLock(FileLock):
    """The work directory's lock: one run at a time per work directory."""

    guards = "the work directory lock"

    def __init__(self, workdir: Workdir, echo: Any = None) -> None:
        super().__init__(workdir.lock_path, echo)
        self.workdir = workdir

    def prepare(self) -> None:
        directory = self.workdir.path
        if directory.exists() and not directory.is_dir():
            raise UserError(
                f"the work directory {directory} is a file, not a directory",
                "pass --workdir with a directory (it is created when missing), e.g. --workdir work",
            )
        super().prepare()


class SystemLock(FileLock):
    """The target system's lock, ``ROOT/var/lock/toa-kernel.lock``: one run at a time
    changes a system, whatever the work directories of the runs."""

    guards = "the lock of the system"

    def __init__(self, lock_path: Path, root: Path, echo: Any = None) -> None:
        super().__init__(lock_path, echo)
        self.guards = f"the lock of the system under {root}"


def recorded_pid(fd: int) -> int | None:
    """The pid written in a lock file, if any."""
    try:
        return int(os.pread(fd, 64, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_holder(fd: int) -> str:
    """Describe the process recorded in a lock file: 'pid N: command'."""
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return "unknown process"
    if not text:
        return "unknown process"
    pid, _, command = text.partition(" ")
    return f"pid {pid}: {command}" if command else f"pid {pid}"
