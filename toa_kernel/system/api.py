"""One interface for the system a step acts on, here or over SSH.

A step talks to a ``System``; ``LocalSystem`` (system/local.py) is this machine
under a root prefix, ``SshSystem`` (system/ssh.py) a server reached over SSH
under the same kind of prefix (``/`` in production). ``open_system(settings)``
(system/opener.py) picks one.

Paths. Every path given to a System is a *system path*: absolute, as the target
system sees it (``/boot/grub/grub.conf``), never joined with the root by hand.
``resolve`` follows symlinks *inside* the root (an absolute link target is taken
relative to the root, as in a chroot, and ``..`` never climbs above it), and the
file operations resolve before they act, so ``/etc/grub.conf ->
../boot/grub/grub.conf`` is read and written through. ``host_path`` gives the
path on the machine where commands run (root prefix + system path): use it in
the argv of ``run`` (``depmod -b host_path('/')``). ``run`` is never chrooted.

Errors. File conditions raise the usual OSErrors (``FileNotFoundError``,
``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``), so code
written for ``open()`` keeps its ``except`` clauses; everything else is a
``ToaError``: ``UserError`` for a request that cannot work (a missing
directory, a link loop), ``EnvironmentFailure`` for the machine or the link
failing (disk full, a tool missing on the server, a dropped connection).

Writes. ``write_bytes_atomic`` writes a temporary file in the target's
directory, syncs it, keeps an existing target's mode and owner, renames it over
the target and syncs again, optionally after a timestamped backup
(``NAME.toa-backup-YYYYmmddTHHMMSSZ``, same mode and owner). A process or a
connection that dies at any moment leaves the old or the new content.

Porting a step onto a System (what replaces what):

- ``root.resolve(p)`` / ``root.path(p)`` + ``open()``/``read_text()`` ->
  ``system.read_bytes(p)`` (or ``read_text(p)``, ``None`` when missing);
  ``Path.exists/is_file/stat/lstat`` -> ``system.stat(p[, follow_symlinks=False])``;
  ``os.listdir``/``glob`` -> ``system.listdir(dir)`` and filter the names;
  ``os.readlink`` -> ``system.readlink(p)``.
- ``fileops.atomic_write(root.path(p), data)`` + ``backup_file`` ->
  ``system.write_bytes_atomic(p, data, mode=..., backup=True)``;
  ``backups_of`` -> ``system.backups_of(p)``; ``unlink``/``remove_tree`` ->
  ``system.remove(p[, recursive=True])``; ``mkdir(parents=True)`` -> ``makedirs``;
  copying build artifacts in -> ``copy_file_in`` (one file) / ``put_tree`` (a tree).
- ``subprocess.run([...])`` on the system -> ``system.run([...], check=True)``
  with paths from ``system.host_path(p)`` (``depmod -b``, ``installkernel``
  under the root); read ``result.out``/``result.err`` (bytes: ``stdout``/``stderr``).
- ``filecmp``/hashing an installed file -> ``sha256``; ``rglob(NAME)`` -> ``find(dir, NAME)``;
  a log's tail -> ``read_tail``; ``backup_file`` -> ``backup`` (``hidden`` for cron.d);
  ``chmod``/``chown`` -> ``set_mode``; ``symlink_to`` -> ``symlink``; ``shutil.which`` ->
  ``which``; ``os.geteuid`` -> ``effective_uid``; ``os.access(W_OK)`` -> ``writable``;
  ``os.path.realpath`` of what a command will touch -> ``host_realpath``; a long command
  whose output is wanted line by line (make) -> ``stream``; files back -> ``get_tree``.
- The run lock -> ``with system.lock("toa-kernel.lock"):`` (held on the server).
- Keep planners pure: gather facts through the System, compute the plan and the
  diff locally, then apply with the write/remove/run primitives. Open the
  System once per task (``open_system(settings)``) and close it.
- Each call over SSH is one or more round trips (resolve: one plus one per
  symlink followed); read a file once and work on the bytes.
"""

from __future__ import annotations

import contextlib
import re
import stat as statmod
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple

from toa_kernel.core.errors import EnvironmentFailure, ToolMissing, UserError
from toa_kernel.core.fileops import BACKUP_TAG, backup_order

# Exit codes of commands that could not run (bash/dash convention).
NOT_FOUND_STATUS = 127
Progress = Callable[[int], None]


class NotRegularFile(UserError):
    """A path that is neither a regular file nor a directory (a FIFO, a device, a socket):
    it is never read, so nothing blocks or reads forever."""


@dataclass(frozen=True)
class FileStat:
    """What ``stat`` says about a path: kind, permission bits, owner, size, filesystem."""

    kind: str  # "file", "dir", "link" or "other"
    mode: int  # permission bits, mode & 0o7777
    uid: int
    gid: int
    size: int
    device: int = 0  # st_dev: paths on one filesystem share it

    @classmethod
    def from_mode(cls, st_mode: int, uid: int, gid: int, size: int, device: int = 0) -> FileStat:
        if statmod.S_ISLNK(st_mode):
            kind = "link"
        elif statmod.S_ISDIR(st_mode):
            kind = "dir"
        elif statmod.S_ISREG(st_mode):
            kind = "file"
        else:
            kind = "other"
        return cls(kind, st_mode & 0o7777, uid, gid, size, device)


class WriteResult(NamedTuple):
    """The system path written (symlinks resolved) and the backup made, if any."""

    path: str
    backup: str | None


@dataclass(frozen=True)
class RunResult:
    """A finished command: exit status and raw output bytes."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def check(self, where: str = "") -> RunResult:
        """Raise a clear error unless the command succeeded; return self."""
        if self.ok:
            return self
        if self.returncode == NOT_FOUND_STATUS and b"not found" in self.stderr:
            program = missing_program(self.err) or (self.argv[0] if self.argv else "?")
            raise ToolMissing(program, f"install {program} on {where or 'the system'}")
        detail = self.err.strip() or f"exit status {self.returncode}"
        raise EnvironmentFailure(f"{' '.join(self.argv)} failed{' on ' + where if where else ''}: {detail}")


def missing_program(stderr: str) -> str:
    """The program a shell could not find (bash: "X: command not found", dash: "X: not found")."""
    found = re.findall(r"([^\s:]+): (?:command )?not found", stderr)
    return found[-1] if found else ""


def check_system_path(system_path: str) -> str:
    """An absolute system path, normalised (``//x/./y`` -> ``/x/y``; ``..`` is kept)."""
    text = str(system_path)
    if not text.startswith("/"):
        raise ValueError(f"system path must be absolute: {text!r}")
    return str(PurePosixPath(text))


def split_parent(system_path: str) -> tuple[str, str]:
    """(parent, name) of a normalised system path; ``/`` has no name."""
    path = PurePosixPath(check_system_path(system_path))
    if path.name in ("", "..", "."):
        raise ValueError(f"system path names no file: {system_path!r}")
    return str(path.parent), path.name


class System(ABC):
    """The system a step acts on (see the module docstring)."""

    #: For messages: ``local:/srv/node1`` or ``ssh://root@web1:22:/``.
    label: str
    #: The root prefix on that system (``/`` in production).
    root: str
    #: ``USER@HOST:PORT`` of a server reached over SSH; empty for this machine.
    host: str = ""

    @property
    def flags(self) -> str:
        """The command-line flags that name this system again (for fixes in messages)."""
        return (f"--host {self.host} " if self.host else "") + f"--root {self.root}"

    @property
    def is_live(self) -> bool:
        """True when the root is that machine's own ``/`` (the running system)."""
        return self.root == "/"

    @abstractmethod
    def host_path(self, system_path: str) -> str:
        """The path on the machine where commands run: root prefix + system path."""

    @abstractmethod
    def resolve(self, system_path: str) -> str:
        """``system_path`` with every symlink followed inside the root (a system path)."""

    @abstractmethod
    def read_bytes(self, system_path: str, limit: int | None = None) -> bytes:
        """The file's bytes (the first ``limit`` bytes when given); follows links in the root.

        Only a regular file is read: a FIFO, a device or a socket raises ``NotRegularFile``.
        """

    @abstractmethod
    def read_tail(self, system_path: str, size: int) -> bytes:
        """The last ``size`` bytes of a (possibly huge) regular file; errors as ``read_bytes``."""

    @abstractmethod
    def sha256(self, system_path: str) -> str | None:
        """The sha256 of a regular file's bytes (``None`` when it is missing or not a file)."""

    @abstractmethod
    def stat(self, system_path: str, follow_symlinks: bool = True) -> FileStat | None:
        """What the path is (``None`` when it does not exist)."""

    @abstractmethod
    def listdir(self, system_path: str) -> list[str]:
        """Names in a directory (sorted, without ``.`` and ``..``)."""

    @abstractmethod
    def readlink(self, system_path: str) -> str | None:
        """A symlink's target text as stored (``None`` when the path is not a link)."""

    @abstractmethod
    def find(self, system_dir: str, name: str) -> list[str]:
        """System paths of the regular files called ``name`` below a directory, sorted
        (links to directories are not followed; a missing directory holds none)."""

    @abstractmethod
    def host_realpath(self, system_path: str) -> str:
        """The host path with every symlink followed the way the host's kernel follows them
        (which may lead out of the root): what a command given ``host_path`` really acts on.
        Missing components are kept as they are (``readlink -m``)."""

    @abstractmethod
    def writable(self, system_path: str) -> bool:
        """True when the login (after sudo) may write the file, or create files in the directory
        (false on a read-only filesystem and for an immutable file)."""

    @abstractmethod
    def write_bytes_atomic(
        self, system_path: str, data: bytes, mode: int | None = None, backup: bool = False
    ) -> WriteResult:
        """Replace the file atomically (``mode`` applies to a new file); see the module docstring."""

    @abstractmethod
    def copy_file_in(
        self,
        local_path: Path,
        system_path: str,
        mode: int | None = None,
        backup: bool = False,
        progress: Progress | None = None,
    ) -> WriteResult:
        """Copy a file of the machine the tool runs on to the system, like ``write_bytes_atomic``."""

    @abstractmethod
    def backup(self, system_path: str, hidden: bool = False) -> str:
        """Copy a file (links followed) to ``NAME.toa-backup-TIMESTAMP`` beside it, same mode and
        owner, synced; ``hidden`` starts the name with a dot (cron and rc.sysinit skip such files).
        Returns the backup's system path."""

    @abstractmethod
    def set_mode(self, system_path: str, mode: int, uid: int | None = None, gid: int | None = None) -> None:
        """chmod (and, with ``uid``/``gid``, chown) the file a path leads to."""

    @abstractmethod
    def symlink(self, target: str, system_path: str) -> None:
        """Make ``system_path`` a symlink whose text is ``target``, replacing a file or link there."""

    @abstractmethod
    def put_tree(
        self,
        local_dir: Path,
        system_dir: str,
        progress: Progress | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        """Copy the contents of a local directory into ``system_dir`` (created; files replaced);
        with ``names``, only those paths (relative, files or links) of it.

        Not atomic as a whole: ship into a fresh directory and rename it when
        readers must never see half a tree.
        """

    @abstractmethod
    def get_tree(self, system_dir: str, local_dir: Path, names: Sequence[str] | None = None) -> None:
        """Copy a directory of the system (or, with ``names``, those files of it) into a local
        directory (created). Only regular files and directories come over (links and devices
        are left out); a name that would leave ``local_dir`` is refused."""

    @abstractmethod
    def remove(self, system_path: str, recursive: bool = False) -> bool:
        """Remove a file, link or (empty, or any with ``recursive``) directory; False if absent."""

    @abstractmethod
    def makedirs(self, system_path: str, mode: int = 0o755) -> None:
        """Create a directory and its parents (no error when it exists)."""

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        input: bytes | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> RunResult:
        """Run a command on that machine (``cwd`` is a host path; ``env`` adds variables).

        A command that cannot be found exits 127; ``check`` raises for any failure.
        A command still running after ``timeout`` seconds is killed and raises
        ``EnvironmentFailure``.
        """

    @abstractmethod
    def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        """Run a command, handing each line of its output (stdout and stderr together, newline
        stripped) to ``on_line`` as it comes; return the exit status. For a long ``make``.
        An exception from ``on_line`` (Ctrl-C) stops the command."""

    @abstractmethod
    def lock(self, name: str) -> contextlib.AbstractContextManager[object]:
        """An exclusive, non-blocking lock ``ROOT/var/lock/NAME`` held on that system.

        A second holder is refused at once with ``LockHeld`` naming the first;
        the lock frees itself when its holder dies or its connection drops.
        """

    @abstractmethod
    def free_bytes(self, system_path: str) -> int:
        """Bytes available to the user on the filesystem holding an existing path."""

    @abstractmethod
    def which(self, program: str) -> str | None:
        """The host path of a program (PATH, then /sbin and /usr/sbin), ``None`` when absent."""

    @abstractmethod
    def effective_uid(self) -> int:
        """The user id commands run as there (0: root, also through sudo)."""

    def close(self) -> None:  # noqa: B027 - a no-op for systems holding nothing open
        """Release what the system holds open (the SSH connection)."""

    # Conveniences built on the primitives above.

    def read_text(self, system_path: str, limit: int | None = None) -> str | None:
        """The file's text (undecodable bytes replaced); ``None`` when missing or unreadable."""
        try:
            return self.read_bytes(system_path, limit).decode(errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, NotRegularFile):
            return None

    def exists(self, system_path: str) -> bool:
        return self.stat(system_path) is not None

    def backups_of(self, system_path: str) -> list[str]:
        """Backups made with ``backup=True`` for ``system_path``, oldest first."""
        parent, name = split_parent(self.resolve(system_path))
        try:
            names = self.listdir(parent)
        except (FileNotFoundError, NotADirectoryError):
            return []
        prefix = name + BACKUP_TAG
        ours = sorted((n for n in names if n.startswith(prefix)), key=backup_order)
        return [str(PurePosixPath(parent) / n) for n in ours]

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
