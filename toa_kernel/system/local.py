"""The System interface on this machine, under a root prefix.

Paths map through ``Root`` (system/rootfs.py), writes go through core/fileops
(temp file, fsync, keep mode/owner, rename, fsync the directory; timestamped
backups), the lock is core/state's flock with holder reporting. Commands run
with ``subprocess`` on this machine (not chrooted: pass ``host_path`` values).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import stat as statmod
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Callable

from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.fileops import atomic_write, backup_file, disk_error, file_kind, read_upto, remove_tree
from toa_kernel.core.state import SystemLock
from toa_kernel.system.api import (
    NOT_FOUND_STATUS,
    FileStat,
    NotRegularFile,
    Progress,
    RunResult,
    System,
    WriteResult,
    check_system_path,
    split_parent,
)
from toa_kernel.system.rootfs import Root
from toa_kernel.system.sshscripts import LOCK_DIR, SBIN_DIRS, check_lock_name


class LocalSystem(System):
    """This machine's files under ``root`` (``Root("/")`` is the live system)."""

    def __init__(self, root: Root) -> None:
        self.fs = root
        self.root = root.base.as_posix()
        self.label = f"local:{self.root}"

    def host_path(self, system_path: str) -> str:
        return str(self.fs.path(check_system_path(system_path)))

    def resolve(self, system_path: str) -> str:
        return self.fs.system_path(self.fs.resolve(check_system_path(system_path)))

    def real(self, system_path: str) -> Path:
        """The host path of ``system_path`` with symlinks resolved inside the root."""
        return self.fs.resolve(check_system_path(system_path))

    def entry(self, system_path: str) -> Path:
        """The host path of the entry itself: parent resolved, last component not followed."""
        parent, name = split_parent(system_path)
        return self.real(parent) / name

    @contextlib.contextmanager
    def open_regular(self, system_path: str) -> Iterator[object]:
        """The file opened for reading, refused unless it is a regular file (never blocks)."""
        path = self.real(system_path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb", buffering=0) as handle:
            mode = os.fstat(fd).st_mode
            if statmod.S_ISDIR(mode):
                raise IsADirectoryError(21, "Is a directory", str(path))
            if not statmod.S_ISREG(mode):
                raise NotRegularFile(
                    f"{system_path} on {self.label} is {file_kind(mode)}, not a regular file",
                    f"check {path}",
                )
            yield handle

    def read_bytes(self, system_path: str, limit: int | None = None) -> bytes:
        with self.open_regular(system_path) as handle:
            return read_upto(handle, limit) if limit is not None else read_upto(handle, 1 << 62)

    def read_tail(self, system_path: str, size: int) -> bytes:
        with self.open_regular(system_path) as handle:
            end = handle.seek(0, os.SEEK_END)  # type: ignore[attr-defined]
            handle.seek(max(0, end - size))  # type: ignore[attr-defined]
            return read_upto(handle, size)

    def sha256(self, system_path: str) -> str | None:
        digest = hashlib.sha256()
        try:
            with self.open_regular(system_path) as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):  # type: ignore[attr-defined]
                    digest.update(chunk)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, NotRegularFile):
            return None
        return digest.hexdigest()

    def stat(self, system_path: str, follow_symlinks: bool = True) -> FileStat | None:
        path = self.real(system_path) if follow_symlinks else self.entry(system_path)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileStat.from_mode(st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_dev)

    def listdir(self, system_path: str) -> list[str]:
        return sorted(os.listdir(self.real(system_path)))

    def readlink(self, system_path: str) -> str | None:
        try:
            return os.readlink(self.entry(system_path))
        except OSError:  # missing, or not a link
            return None

    def find(self, system_dir: str, name: str) -> list[str]:
        top = self.real(system_dir)
        if not top.is_dir():
            return []
        found = [
            Path(directory) / name
            for directory, _dirs, files in os.walk(top)
            if name in files
            and (Path(directory) / name).is_file()
            and not (Path(directory) / name).is_symlink()
        ]
        return sorted(self.fs.system_path(path) for path in found)

    def host_realpath(self, system_path: str) -> str:
        return os.path.realpath(self.host_path(system_path))

    def writable(self, system_path: str) -> bool:
        path = self.real(system_path)
        wanted = os.W_OK | (os.X_OK if path.is_dir() else 0)
        return os.access(path, wanted)

    def write_bytes_atomic(
        self, system_path: str, data: bytes, mode: int | None = None, backup: bool = False
    ) -> WriteResult:
        target = self.real(system_path)
        saved = backup_file(target) if backup and target.is_file() else None
        written = atomic_write(target, data, mode=mode, follow_symlinks=False)
        return WriteResult(self.fs.system_path(written), self.fs.system_path(saved) if saved else None)

    def copy_file_in(
        self,
        local_path: Path,
        system_path: str,
        mode: int | None = None,
        backup: bool = False,
        progress: Progress | None = None,
    ) -> WriteResult:
        data = Path(local_path).read_bytes()
        result = self.write_bytes_atomic(system_path, data, mode=mode, backup=backup)
        if progress:
            progress(len(data))
        return result

    def backup(self, system_path: str, hidden: bool = False) -> str:
        return self.fs.system_path(backup_file(self.real(system_path), hidden=hidden))

    def set_mode(self, system_path: str, mode: int, uid: int | None = None, gid: int | None = None) -> None:
        path = self.real(system_path)
        try:
            os.chmod(path, mode)
            if uid is not None or gid is not None:
                os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        except OSError as exc:
            raise disk_error(exc, path) from exc

    def symlink(self, target: str, system_path: str) -> None:
        link = self.entry(system_path)
        temporary = link.with_name(f".{link.name}.toa-{os.getpid()}")
        try:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(target)
            os.replace(temporary, link)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise disk_error(exc, link) from exc

    def put_tree(
        self,
        local_dir: Path,
        system_dir: str,
        progress: Progress | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.makedirs(system_dir)
        copy_tree(Path(local_dir), self.real(system_dir), names, f"{self.label} {system_dir}", progress)

    def get_tree(self, system_dir: str, local_dir: Path, names: Sequence[str] | None = None) -> None:
        source = self.real(system_dir)
        if not source.is_dir():
            raise FileNotFoundError(2, "No such directory", f"{self.label} {system_dir}")
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        copy_tree(source, Path(local_dir), names, str(local_dir), None, follow=False)

    def remove(self, system_path: str, recursive: bool = False) -> bool:
        path = self.entry(system_path)
        if not path.is_symlink() and not path.exists():
            return False
        try:
            if path.is_dir() and not path.is_symlink() and not recursive:
                path.rmdir()
            else:
                remove_tree(path)
        except OSError as exc:
            raise EnvironmentFailure(f"cannot remove {system_path} on {self.label}: {exc.strerror}") from exc
        return True

    def makedirs(self, system_path: str, mode: int = 0o755) -> None:
        path = self.real(system_path)
        try:
            path.mkdir(mode=mode, parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise UserError(f"{self.label} {system_path} exists and is not a directory") from exc

    def run(
        self,
        argv: Sequence[str],
        input: bytes | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> RunResult:
        argv = tuple(argv)
        environment = {**os.environ, **env} if env else None
        try:
            done = subprocess.run(
                argv, input=input, capture_output=True, timeout=timeout, env=environment, cwd=cwd
            )
        except FileNotFoundError:
            message = f"{argv[0]}: command not found\n".encode()
            result = RunResult(argv, NOT_FOUND_STATUS, b"", message)
        except subprocess.TimeoutExpired as exc:
            raise EnvironmentFailure(
                f"{' '.join(argv)} timed out after {timeout:g} s on {self.label}"
            ) from exc
        else:
            result = RunResult(argv, done.returncode, done.stdout, done.stderr)
        return result.check(self.label) if check else result

    def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        environment = {**os.environ, **env} if env else None
        try:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=environment, cwd=cwd, start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError:
            on_line(f"{argv[0]}: command not found")
            return NOT_FOUND_STATUS
        timer = threading.Timer(timeout, process.kill) if timeout else None
        if timer is not None:
            timer.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                on_line(raw.decode(errors="replace").rstrip("\n"))
            return process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[object]:
        check_lock_name(name)
        self.makedirs(LOCK_DIR)
        with SystemLock(self.real(LOCK_DIR) / name, self.fs.base) as held:
            yield held

    def free_bytes(self, system_path: str) -> int:
        return shutil.disk_usage(self.real(system_path)).free

    def which(self, program: str) -> str | None:
        search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
        return shutil.which(program, path=search)

    def effective_uid(self) -> int:
        return os.geteuid()


def copy_tree(
    source: Path,
    target: Path,
    names: Sequence[str] | None,
    where: str,
    progress: Progress | None,
    follow: bool = True,
) -> None:
    """Copy a tree (or ``names`` of it); ``follow=False`` copies regular files and directories only."""
    try:
        if names is None and follow:
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
            copied = [p for p in source.rglob("*") if p.is_file()]
        else:
            copied = []
            for name in (
                names if names is not None else [str(p.relative_to(source)) for p in source.rglob("*")]
            ):
                item = source / name
                if item.is_symlink() and not follow:
                    continue
                if item.is_dir() and not item.is_symlink():
                    (target / name).mkdir(parents=True, exist_ok=True)
                    continue
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                if (target / name).is_symlink():
                    (target / name).unlink()
                shutil.copy2(item, target / name, follow_symlinks=False)
                copied.append(item)
    except (OSError, shutil.Error) as exc:
        raise EnvironmentFailure(f"cannot copy {source} to {where}: {exc}") from exc
    if progress:
        progress(sum(p.lstat().st_size for p in copied))
