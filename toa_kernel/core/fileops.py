"""Careful file reads and writes, in the manner of grubby.

Every system file (grub.conf, boot hooks, rc.local, a tree's .config and
Makefile) is read with ``read_bytes``/``read_text`` and written with
``atomic_write``: text is decoded as UTF-8 with ``surrogateescape`` and no
newline translation, so any byte (a CRLF line ending, a missing final newline,
a Latin-1 comment) comes back out of ``encode_text`` exactly as it went in.

``atomic_write`` resolves symlinks and writes the link's target (replacing the
link by a file would hide the change from whoever reads through the link), writes
a temporary file in the same directory, fsyncs it, renames it over the target and
fsyncs the directory. Mode and owner of an existing target are preserved. A
process killed at any moment leaves either the old or the new content.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from toa_kernel.core.errors import EnvironmentFailure, UserError

BACKUP_TAG = ".toa-backup-"
# Larger system files than this are refused: nothing we edit comes near it.
MAX_SYSTEM_FILE = 16 * 1024 * 1024
LINE_RE = re.compile(r"[^\n]*\n|[^\n]+\Z")


def read_bytes(path: Path, limit: int = MAX_SYSTEM_FILE, *, truncate: bool = False) -> bytes:
    """The bytes of a regular file (symlinks followed); a clear error for anything else
    (a directory, a FIFO, a device: nothing blocks or reads forever).

    A file over ``limit`` bytes is an error, or with ``truncate`` cut there.
    FileNotFoundError is left to the caller (a missing file is often expected).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", "check the file and run as root") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UserError(f"{path} is {file_kind(st.st_mode)}, not a regular file", f"check {path}")
    with os.fdopen(fd, "rb", buffering=0) as handle:
        data = read_upto(handle, limit + 1)
    if len(data) > limit and truncate:
        return data[:limit]
    if len(data) > limit:
        raise UserError(
            f"{path} is larger than {limit // (1024 * 1024)} MiB: not the small text file expected there",
            f"check {path}",
        )
    return data


def read_upto(handle: Any, count: int) -> bytes:
    """Up to ``count`` bytes, read in pieces (/proc refuses one huge read with ENOMEM)."""
    chunks: list[bytes] = []
    left = count
    while left > 0:
        chunk = handle.read(min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def file_kind(mode: int) -> str:
    """'a directory', 'a FIFO', ... for a stat mode."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def decode_text(data: bytes) -> str:
    """Bytes as text that ``encode_text`` turns back into exactly the same bytes."""
    return data.decode("utf-8", "surrogateescape")


def encode_text(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def lines_of(text: str) -> list[str]:
    """Lines split at ``\n`` only, each with its ending (``\r\n`` stays whole); joined back
    they are ``text`` again. (``str.splitlines`` also splits at form feeds and the like.)"""
    return LINE_RE.findall(text)


def read_text(path: Path, limit: int = MAX_SYSTEM_FILE) -> str:
    """A system file's text, byte for byte (no newline translation)."""
    return decode_text(read_bytes(path, limit))


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def resolve_target(path: Path) -> Path:
    """Follow symlinks of ``path`` (the file itself may not exist yet)."""
    path = Path(path)
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path.parent.resolve() / path.name


def disk_error(exc: OSError, path: Path, where: Path | None = None) -> EnvironmentFailure:
    """Turn an OSError from a write into a clear environment error.

    ``where``: a directory that still exists after the failure, named in the fix
    (``path`` may lie in a temporary directory the caller removes).
    """
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        place = where or path.parent
        return EnvironmentFailure(
            f"no space left on the device while writing {path}",
            f"free space on the filesystem holding {place} (df -h {place}) and run again",
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return EnvironmentFailure(
            f"cannot write {path}: {exc.strerror}",
            "check that the filesystem is writable and that you run as root",
        )
    return EnvironmentFailure(f"cannot write {path}: {exc.strerror or exc}")


def atomic_write(
    path: Path,
    data: bytes | str,
    *,
    mode: int | None = None,
    follow_symlinks: bool = True,
) -> Path:
    """Replace ``path`` with ``data`` atomically; return the file actually written.

    ``mode`` applies to a new file; an existing file keeps its mode and owner.
    """
    target = resolve_target(path) if follow_symlinks else Path(path)
    payload = encode_text(data) if isinstance(data, str) else data
    directory = target.parent
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError as exc:
        raise UserError(f"directory {directory} does not exist", f"create {directory} first") from exc
    except OSError as exc:
        raise disk_error(exc, target) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.chown(tmp, st.st_uid, st.st_gid)
        else:
            os.chmod(tmp, 0o644 if mode is None else mode)
        os.replace(tmp, target)
        fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise disk_error(exc, target) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return target


def atomic_write_json(path: Path, document: Any) -> Path:
    """Write ``document`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


# Free space a download or unpack leaves on its filesystem: 64 MiB, or a twentieth of a small one.
RESERVE_BYTES = 64 << 20


def free_space_budget(directory: Path) -> tuple[int, int]:
    """(bytes that may still be written into ``directory``'s filesystem, the reserve kept free)."""
    st = os.statvfs(directory)
    reserve = min(RESERVE_BYTES, st.f_blocks * st.f_frsize // 20)
    return max(0, st.f_bavail * st.f_frsize - reserve), reserve


def timestamp() -> str:
    """A UTC timestamp usable in file names: 20261122T043100Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def backup_file(path: Path, hidden: bool = False) -> Path:
    """Copy ``path`` (symlinks resolved) to a timestamped backup beside it.

    The copy keeps mode and owner (grub.conf can hold a password hash) and is
    fsynced before this returns. ``hidden`` starts its name with a dot, for
    directories whose every file is read (cron ignores dot files in cron.d).
    Returns the backup's path.
    """
    source = resolve_target(path)
    prefix = "." if hidden else ""
    backup = source.with_name(f"{prefix}{source.name}{BACKUP_TAG}{timestamp()}")
    counter = 1
    while backup.exists():
        backup = source.with_name(f"{prefix}{source.name}{BACKUP_TAG}{timestamp()}.{counter}")
        counter += 1
    st = source.stat()
    try:
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, st.st_mode & 0o7777)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(backup, st.st_mode & 0o7777)
        with contextlib.suppress(PermissionError):
            os.chown(backup, st.st_uid, st.st_gid)
        fsync_dir(backup.parent)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            backup.unlink()
        raise disk_error(exc, backup) from exc
    return backup


def backup_order(name: str) -> tuple[str, int]:
    """Sort key of a backup's name, oldest first: by its second, then by the counter a name
    taken within that second got (``….1``, ``….2``, … ``….10``: numbers, not text)."""
    stamp, dot, counter = name.rpartition(".")
    if dot and counter.isdigit() and BACKUP_TAG in stamp:
        return stamp, int(counter)
    return name, 0


def backups_of(path: Path) -> list[Path]:
    """Backups made by ``backup_file`` for ``path``, oldest first."""
    source = resolve_target(path)
    return sorted(source.parent.glob(f"{source.name}{BACKUP_TAG}*"), key=lambda p: backup_order(p.name))


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
