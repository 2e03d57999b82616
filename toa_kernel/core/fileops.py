"""Careful file writes, in the manner of grubby.

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
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from toa_kernel.core.errors import EnvironmentFailure, UserError

BACKUP_TAG = ".toa-backup-"


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


def disk_error(exc: OSError, path: Path) -> EnvironmentFailure:
    """Turn an OSError from a write into a clear environment error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EnvironmentFailure(
            f"no space left on the device while writing {path}",
            f"free space on the filesystem holding {path.parent} (df -h {path.parent}) and run again",
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
    payload = data.encode() if isinstance(data, str) else data
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


def timestamp() -> str:
    """A UTC timestamp usable in file names: 20261122T043100Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def backup_file(path: Path) -> Path:
    """Copy ``path`` (symlinks resolved) to a timestamped backup beside it.

    The copy keeps mode and owner (grub.conf can hold a password hash) and is
    fsynced before this returns. Returns the backup's path.
    """
    source = resolve_target(path)
    backup = source.with_name(f"{source.name}{BACKUP_TAG}{timestamp()}")
    counter = 1
    while backup.exists():
        backup = source.with_name(f"{source.name}{BACKUP_TAG}{timestamp()}.{counter}")
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


def backups_of(path: Path) -> list[Path]:
    """Backups made by ``backup_file`` for ``path``, oldest first."""
    source = resolve_target(path)
    return sorted(source.parent.glob(f"{source.name}{BACKUP_TAG}*"))


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
