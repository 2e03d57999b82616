"""The System interface on a server reached over SSH (Fabric + Paramiko).

Every remote action is one exec channel on one ``fabric.Connection``: a command
line built by ``command_line`` from an argv (``shlex.join``, never a string
pasted from values), prefixed with ``sudo -n --`` when ``ssh_sudo`` is set (so a
password prompt fails at once instead of hanging), with raw bytes in and out
(no text decoding, no pty). File operations run the snippets of
system/sshscripts.py (POSIX sh and coreutils 8.4 only: no Python, no
``realpath``, no ``sync FILE``), so the server needs nothing that CentOS 6 lacks.

- Atomic writes stream the data into a temporary file beside the target, check
  that every byte arrived, keep the target's mode, owner (and SELinux label),
  ``sync``, ``mv -f`` (rename(2) in one directory), ``sync``. A connection that
  drops mid-write leaves the old file.
- The lock is ``flock`` on ``ROOT/var/lock/NAME`` held by a shell on a
  long-lived channel: it is released when the channel closes or the
  connection (or this process) dies.
- ``sudo`` under RHEL 6's ``Defaults requiretty`` fails without a tty; a pty
  would mangle binary data and merge stderr into stdout, so the tool stops
  with the sudoers line that fixes it (``Defaults:USER !requiretty``).
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import math
import os
import re
import shlex
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

import fabric
import paramiko

from toa_kernel.core.errors import EnvironmentFailure, LockHeld, UserError
from toa_kernel.core.fileops import BACKUP_TAG, timestamp
from toa_kernel.core.sshtarget import SshTarget
from toa_kernel.system import sshscripts as sh
from toa_kernel.system.api import (
    FileStat,
    NotRegularFile,
    Progress,
    RunResult,
    System,
    WriteResult,
    check_system_path,
)
from toa_kernel.system.inroot import resolve_inside
from toa_kernel.system.sshconnect import ConnectionLost, SshOptions, open_connection

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CHUNK = 1 << 20
# Seconds a command may overrun its remote ``timeout`` before the channel is closed.
TIMEOUT_GRACE = 10.0
Feed = Callable[["ChannelWriter"], None]


class ChannelWriter:
    """A file-like ``write`` onto a channel's stdin, counting bytes for progress."""

    def __init__(self, channel: paramiko.Channel, progress: Progress | None = None) -> None:
        self.channel = channel
        self.progress = progress
        self.sent = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            piece = view[start : start + CHUNK]
            self.channel.sendall(piece)
            self.sent += len(piece)
            if self.progress:
                self.progress(len(piece))
        return len(data)


def drain(receive: Callable[[int], bytes], into: bytearray) -> None:
    """Read a channel stream until it ends."""
    while True:
        try:
            data = receive(65536)
        except (OSError, EOFError, paramiko.SSHException):
            return
        if not data:
            return
        into += data


class SshSystem(System):
    """A server's files under ``root`` (``/`` in production), over one SSH connection."""

    def __init__(
        self, connection: fabric.Connection, target: SshTarget, options: SshOptions, root: str = "/"
    ) -> None:
        self.connection = connection
        self.target = target
        self.options = options
        self.sudo = options.sudo
        root_text = str(root or "/")
        if not root_text.startswith("/"):
            raise UserError(f"remote root {root_text!r} must be an absolute path", "pass --root /PATH")
        self.root = str(PurePosixPath(root_text))
        self.label = f"ssh://{target}:{self.root}"
        # Resolved paths, valid until something may change a link (see ``links_changed``).
        self.resolved: dict[str, str] = {}
        self.host = str(target)

    @classmethod
    def connect(cls, target: SshTarget, options: SshOptions, root: str = "/") -> SshSystem:
        """Connect, check sudo and that the root exists on the server."""
        system = cls(open_connection(target, options), target, options, root)
        try:
            system.probe()
        except BaseException:
            system.close()
            raise
        return system

    def probe(self) -> None:
        """One round trip: sudo works (when asked for) and the root is a directory."""
        result = self.script(sh.STAT, self.root)
        if result.returncode == sh.MISSING or (result.ok and parse_stat(result).kind != "dir"):
            raise UserError(
                f"root directory {self.root} does not exist on {self.target}",
                "pass --root with an existing directory on the server (default /)",
            )
        result.check(self.label)

    def close(self) -> None:
        self.connection.close()

    # The one way a command reaches the server.

    def command_line(
        self,
        argv: Sequence[str],
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> str:
        """The remote command line for ``argv``: sudo, timeout, env, cwd, all quoted."""
        words: list[str] = ["sudo", "-n", "--"] if self.sudo else []
        if timeout is not None:
            words += ["timeout", str(max(1, math.ceil(timeout)))]
        if env:
            for name in env:
                if not ENV_NAME_RE.match(name):
                    raise UserError(f"environment variable name {name!r} is not valid")
            words += ["env", *(f"{name}={value}" for name, value in env.items())]
        if cwd is not None:
            words += ["sh", "-c", 'cd "$1" || exit 125; shift; exec "$@"', "toa", cwd]
        return shlex.join([*words, *argv])

    def exec(
        self,
        argv: Sequence[str],
        feed: Feed | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        progress: Progress | None = None,
    ) -> RunResult:
        """Run ``argv`` on the server; raw stdout/stderr; sudo failures raised clearly."""
        argv = tuple(argv)
        command = self.command_line(argv, timeout, env, cwd)
        channel = self.open_channel(command, argv)
        out, err = bytearray(), bytearray()
        readers = [
            threading.Thread(target=drain, args=(channel.recv, out), daemon=True),
            threading.Thread(target=drain, args=(channel.recv_stderr, err), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            self.send(channel, feed, progress)
            if not self.wait(readers, timeout):
                raise EnvironmentFailure(
                    f"{shlex.join(argv)[:200]} timed out after {timeout:g} s on {self.label}",
                    "raise the timeout, or look on the server for what the command waits for",
                )
            status = channel.recv_exit_status()
        finally:
            channel.close()
        if status < 0:  # no exit status: the channel or the connection died
            raise self.lost(argv)
        result = RunResult(argv, status, bytes(out), bytes(err))
        self.check_sudo(result)
        return result

    def open_channel(self, command: str, argv: tuple[str, ...]) -> paramiko.Channel:
        try:
            channel = self.connection.create_session()
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self.lost(argv) from exc
        return channel

    @staticmethod
    def send(channel: paramiko.Channel, feed: Feed | None, progress: Progress | None) -> None:
        """Feed stdin, then close it (a command that stopped reading is not an error here)."""
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            if feed is not None:
                feed(ChannelWriter(channel, progress))
            channel.shutdown_write()

    @staticmethod
    def wait(readers: list[threading.Thread], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout + TIMEOUT_GRACE
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(reader.is_alive() for reader in readers)

    @property
    def connected(self) -> bool:
        transport = self.connection.transport
        return bool(transport and transport.is_active())

    def lost(self, argv: Sequence[str]) -> ConnectionLost:
        return ConnectionLost(
            f"the SSH connection to {self.target} dropped while running {shlex.join(argv)[:120]}",
            "check the server and the network, then run again (files are replaced by rename, "
            "so none was left half-written)",
        )

    def check_sudo(self, result: RunResult) -> None:
        """Turn sudo's own refusals into errors that say which sudoers line fixes them."""
        if not self.sudo or result.returncode not in (1, 127):
            return
        text = result.err
        user = self.target.user
        if "sudo:" not in text:
            return
        if "must have a tty" in text:
            raise UserError(
                f"sudo on {self.target} requires a tty (Defaults requiretty) and the tool runs without one",
                f"on the server, add this line with visudo -f /etc/sudoers.d/toa-kernel: "
                f"Defaults:{user} !requiretty",
            )
        if "password is required" in text:
            raise UserError(
                f"sudo on {self.target} asks {user} for a password",
                "allow it without one (visudo -f /etc/sudoers.d/toa-kernel: "
                f"{user} ALL=(root) NOPASSWD: ALL), "
                "or log in as root and turn ssh_sudo off",
            )
        if "not in the sudoers" in text or "not allowed to" in text:
            raise UserError(f"{user} may not use sudo on {self.target}: {text.strip()}", "log in as root")
        if result.returncode == 127 and re.search(r"sudo: (command )?not found", text):
            raise EnvironmentFailure(
                f"sudo is not installed on {self.target}", "yum install sudo, or log in as root"
            )

    def script(
        self, snippet: str, *args: str, feed: Feed | None = None, progress: Progress | None = None
    ) -> RunResult:
        """Run one of the sshscripts snippets with its positional arguments."""
        return self.exec(["sh", "-c", snippet, "toa", *args], feed=feed, progress=progress)

    # Paths.

    def host_path(self, system_path: str) -> str:
        path = check_system_path(system_path)
        return path if self.root == "/" else self.root + (path if path != "/" else "")

    def resolve(self, system_path: str) -> str:
        path = check_system_path(system_path)
        if path not in self.resolved:
            self.resolved[path] = resolve_inside(path, self.find_link)
        return self.resolved[path]

    def links_changed(self) -> None:
        """Forget resolved paths: a link was made or removed, or a command ran that may have.
        (Writing a file never changes how a path resolves: it replaces the link's target.)"""
        self.resolved.clear()

    def find_link(self, candidates: list[str]) -> Optional[tuple[int, str]]:
        result = self.script(sh.FIND_LINK, *(self.host_path(c) for c in candidates)).check(self.label)
        if not result.stdout:
            return None
        index, _, target = result.stdout.partition(b"\0")
        return int(index), decode_path(target.removesuffix(b"\n"))

    def entry(self, system_path: str) -> str:
        """Host path of the entry itself: parent resolved inside the root, last component not followed."""
        path = PurePosixPath(check_system_path(system_path))
        if str(path) == "/":
            return self.host_path("/")
        return self.host_path(str(PurePosixPath(self.resolve(str(path.parent))) / path.name))

    def real(self, system_path: str) -> str:
        return self.host_path(self.resolve(system_path))

    def system_path(self, host_path: str) -> str:
        """The inverse of ``host_path``."""
        if self.root == "/":
            return host_path
        relative = host_path[len(self.root) :]
        return relative or "/"

    # Reading.

    def read_bytes(self, system_path: str, limit: int | None = None) -> bytes:
        result = self.script(sh.READ, self.real(system_path), "" if limit is None else str(limit))
        raise_file_error(result, system_path, self.label)
        return result.check(self.label).stdout

    def read_tail(self, system_path: str, size: int) -> bytes:
        result = self.script(sh.TAIL, self.real(system_path), str(max(0, int(size))))
        raise_file_error(result, system_path, self.label)
        return result.check(self.label).stdout

    def sha256(self, system_path: str) -> str | None:
        result = self.script(sh.SHA256, self.real(system_path))
        if result.returncode == sh.MISSING:
            return None
        return result.check(self.label).out.split()[0]

    def stat(self, system_path: str, follow_symlinks: bool = True) -> FileStat | None:
        path = self.real(system_path) if follow_symlinks else self.entry(system_path)
        result = self.script(sh.STAT, path)
        if result.returncode == sh.MISSING:
            return None
        return parse_stat(result.check(self.label))

    def listdir(self, system_path: str) -> list[str]:
        result = self.script(sh.LIST, self.real(system_path))
        raise_file_error(result, system_path, self.label)
        names = result.check(self.label).stdout.split(b"\0")
        return sorted(decode_path(n) for n in names if n)

    def readlink(self, system_path: str) -> str | None:
        result = self.script(sh.READLINK, self.entry(system_path))
        if result.returncode == sh.NOT_LINK:
            return None
        return decode_path(result.check(self.label).stdout.removesuffix(b"\n"))

    def find(self, system_dir: str, name: str) -> list[str]:
        result = self.script(sh.FIND, self.real(system_dir), name).check(self.label)
        return sorted(self.system_path(decode_path(p)) for p in result.stdout.split(b"\0") if p)

    def host_realpath(self, system_path: str) -> str:
        result = self.script(sh.HOST_REALPATH, self.host_path(system_path)).check(self.label)
        return decode_path(result.stdout.removesuffix(b"\n"))

    def writable(self, system_path: str) -> bool:
        result = self.script(sh.WRITABLE, self.real(system_path))
        if result.returncode == sh.NOT_WRITABLE:
            return False
        result.check(self.label)
        return True

    def which(self, program: str) -> str | None:
        result = self.script(sh.WHICH, program, *sh.SBIN_DIRS)
        if result.returncode == sh.NOT_FOUND:
            return None
        return decode_path(result.check(self.label).stdout.removesuffix(b"\n"))

    def effective_uid(self) -> int:
        result = self.exec(["id", "-u"]).check(self.label)
        try:
            return int(result.out.strip())
        except ValueError as exc:
            raise EnvironmentFailure(f"cannot read id -u's answer on {self.label}: {result.out!r}") from exc

    def free_bytes(self, system_path: str) -> int:
        result = self.script(sh.FREE, self.real(system_path))
        raise_file_error(result, system_path, self.label)
        lines = result.check(self.label).out.splitlines()
        try:
            return int(lines[1].split()[3]) * 1024
        except (IndexError, ValueError) as exc:
            raise EnvironmentFailure(f"cannot read df's answer on {self.label}: {result.out!r}") from exc

    # Writing.

    def write_bytes_atomic(
        self, system_path: str, data: bytes, mode: int | None = None, backup: bool = False
    ) -> WriteResult:
        def feed(writer: ChannelWriter) -> None:
            writer.write(data)

        return self.write_stream(system_path, feed, len(data), mode, backup)

    def copy_file_in(
        self,
        local_path: Path,
        system_path: str,
        mode: int | None = None,
        backup: bool = False,
        progress: Progress | None = None,
    ) -> WriteResult:
        source = Path(local_path)
        with open(source, "rb") as handle:

            def feed(writer: ChannelWriter) -> None:
                shutil.copyfileobj(handle, writer, CHUNK)

            size = os.fstat(handle.fileno()).st_size
            return self.write_stream(system_path, feed, size, mode, backup, progress)

    def write_stream(
        self,
        system_path: str,
        feed: Feed,
        size: int,
        mode: int | None,
        backup: bool,
        progress: Progress | None = None,
    ) -> WriteResult:
        target = self.real(system_path)
        name = target.rsplit("/", 1)[1]
        if not name:
            raise UserError(f"{system_path} names no file")
        backup_path = f"{target}{BACKUP_TAG}{timestamp()}" if backup else ""
        mode_text = format(0o644 if mode is None else mode, "o")
        result = self.script(
            sh.WRITE, target, mode_text, str(size), backup_path, feed=feed, progress=progress
        )
        if result.returncode == sh.NOT_DIR:
            parent = self.system_path(target.rsplit("/", 1)[0] or "/")
            raise UserError(f"directory {parent} does not exist on {self.label}", f"create {parent} first")
        if result.returncode == sh.SHORT_WRITE:
            raise ConnectionLost(
                f"{system_path} on {self.label}: the data did not arrive whole; the file was left as it was",
                "check the connection and the free space on the server, then run again",
            )
        if not result.ok:
            raise write_error(result, system_path, self.label)
        saved = result.stdout.decode(errors="surrogateescape")
        return WriteResult(self.system_path(target), self.system_path(saved) if saved else None)

    def backup(self, system_path: str, hidden: bool = False) -> str:
        source = self.real(system_path)
        directory, name = source.rsplit("/", 1)
        prefix = "." if hidden else ""
        result = self.script(sh.BACKUP, source, f"{directory}/{prefix}{name}{BACKUP_TAG}{timestamp()}")
        raise_file_error(result, system_path, self.label)
        if not result.ok:
            raise write_error(result, system_path + BACKUP_TAG + "*", self.label)
        return self.system_path(result.stdout.decode(errors="surrogateescape"))

    def set_mode(self, system_path: str, mode: int, uid: int | None = None, gid: int | None = None) -> None:
        owner = ("" if uid is None else str(uid), "" if gid is None else str(gid))
        result = self.script(sh.SET_MODE, self.real(system_path), format(mode, "o"), *owner)
        raise_file_error(result, system_path, self.label)
        if not result.ok:
            raise write_error(result, system_path, self.label)

    def symlink(self, target: str, system_path: str) -> None:
        self.links_changed()
        result = self.script(sh.SYMLINK, target, self.entry(system_path))
        if result.returncode == sh.NOT_DIR:
            parent = str(PurePosixPath(check_system_path(system_path)).parent)
            raise UserError(f"directory {parent} does not exist on {self.label}", f"create {parent} first")
        if not result.ok:
            raise write_error(result, system_path, self.label)

    def put_tree(
        self,
        local_dir: Path,
        system_dir: str,
        progress: Progress | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.links_changed()
        source = Path(local_dir)
        if not source.is_dir():
            raise UserError(f"{source} is not a directory")

        def feed(writer: ChannelWriter) -> None:
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.GNU_FORMAT) as archive:  # type: ignore[call-overload]
                if names is None:
                    archive.add(source, arcname=".", filter=as_root)
                for name in names or ():
                    archive.add(source / name, arcname=name, recursive=False, filter=as_root)

        result = self.script(sh.UNTAR, self.real(system_dir), feed=feed, progress=progress)
        result.check(self.label)

    def get_tree(self, system_dir: str, local_dir: Path, names: Sequence[str] | None = None) -> None:
        argv = ("sh", "-c", sh.TAR_OUT, "toa", self.real(system_dir), *(names or ["."]))
        channel = self.open_channel(self.command_line(argv), argv)
        err = bytearray()
        reader = threading.Thread(target=drain, args=(channel.recv_stderr, err), daemon=True)
        reader.start()
        damaged: EnvironmentFailure | None = None
        try:
            channel.shutdown_write()
            with channel.makefile("rb") as stream:
                try:
                    extract_safely(stream, Path(local_dir), f"{self.label} {system_dir}")
                except EnvironmentFailure as exc:  # an empty stream: the exit status says why
                    damaged = exc
            status = channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self.lost(argv) from exc
        finally:
            channel.close()
            reader.join(5)
        if status == 0 and damaged is not None:
            raise damaged
        if status == sh.MISSING:
            raise FileNotFoundError(2, "No such directory", f"{self.label} {system_dir}")
        if status < 0:
            raise self.lost(argv)
        RunResult(argv, status, b"", bytes(err)).check(self.label)

    def remove(self, system_path: str, recursive: bool = False) -> bool:
        self.links_changed()
        result = self.script(sh.REMOVE, self.entry(system_path), "r" if recursive else "")
        if result.returncode == sh.MISSING:
            return False
        result.check(self.label)
        return True

    def makedirs(self, system_path: str, mode: int = 0o755) -> None:
        result = self.script(sh.MAKEDIRS, self.real(system_path), format(mode, "o"))
        if result.returncode == sh.NOT_DIR:
            raise UserError(f"{self.label} {system_path} exists and is not a directory")
        result.check(self.label)

    # Commands and the lock.

    def run(
        self,
        argv: Sequence[str],
        input: bytes | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> RunResult:
        def feed(writer: ChannelWriter) -> None:
            if input:
                writer.write(input)

        started = time.monotonic()
        self.links_changed()  # whatever the command does to links, it is done after this
        try:
            result = self.exec(argv, feed=feed, timeout=timeout, env=env, cwd=cwd)
        finally:
            self.links_changed()
        if timeout is not None and result.returncode == 124 and time.monotonic() - started >= timeout:
            raise EnvironmentFailure(
                f"{shlex.join(argv)[:200]} timed out after {timeout:g} s on {self.label}"
            )
        return result.check(self.label) if check else result

    def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        argv = tuple(argv)
        self.links_changed()
        command = self.command_line(argv, timeout, env, cwd)
        try:
            channel = self.connection.create_session()
            channel.set_combine_stderr(True)
            channel.exec_command(command)
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self.lost(argv) from exc
        pending = b""
        try:
            while True:
                data = channel.recv(65536)
                if not data:
                    break
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
            if pending:
                on_line(pending.decode(errors="replace"))
            status = channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self.lost(argv) from exc
        finally:
            channel.close()  # also when on_line raised: the server's sshd ends the command
            self.links_changed()
        if status < 0:
            raise self.lost(argv)
        if self.sudo and status in (1, 127) and pending.startswith(b"sudo:"):
            self.check_sudo(RunResult(argv, status, b"", pending))
        return status

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[object]:
        sh.check_lock_name(name)
        self.makedirs(sh.LOCK_DIR)
        path = f"{self.real(sh.LOCK_DIR)}/{name}"
        holder = f"toa-kernel pid {os.getpid()} on {socket.gethostname()} (user {getpass.getuser()})"
        argv = ("sh", "-c", sh.LOCK, "toa", path, holder)
        channel = self.open_channel(self.command_line(argv), argv)
        try:
            self.await_lock(channel, argv, self.system_path(path))
            yield self
        finally:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.shutdown_write()
                channel.recv_exit_status()
            channel.close()

    def await_lock(self, channel: paramiko.Channel, argv: tuple[str, ...], system_path: str) -> None:
        """Wait for the holder shell's "locked", or turn its refusal into LockHeld."""
        seen = b""
        channel.settimeout(max(30.0, self.options.connect_timeout))
        while not seen.endswith(b"locked\n"):
            try:
                data = channel.recv(64)
            except socket.timeout as exc:
                raise EnvironmentFailure(f"{self.label}: no answer from the lock holder shell") from exc
            if not data:
                break
            seen += data
        channel.settimeout(None)
        if seen.endswith(b"locked\n"):
            return
        err = bytearray()
        drain(channel.recv_stderr, err)
        status = channel.recv_exit_status()
        if status < 0:
            raise self.lost(argv)
        result = RunResult(argv, status, seen, bytes(err))
        self.check_sudo(result)
        if status == sh.LOCK_BUSY:
            holder = result.err.strip() or "unknown process"
            raise LockHeld(
                f"another toa-kernel run holds the lock {system_path} on {self.target} ({holder})",
                "wait for it to finish; the lock frees itself when that run ends or its connection drops",
            )
        result.check(self.label)


def extract_safely(stream: object, target: Path, where: str) -> None:
    """Unpack a tar stream of regular files and directories into ``target``; anything else
    (links, devices, names leaving ``target``) is refused."""
    target.mkdir(parents=True, exist_ok=True)
    base = target.resolve()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                destination = (base / member.name).resolve()
                if member.name.startswith("/") or (destination != base and base not in destination.parents):
                    raise UserError(f"{where} sent {member.name!r}, a name outside the directory")
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    source = archive.extractfile(member)
                    assert source is not None
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with open(destination, "wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
                    os.chmod(destination, member.mode & 0o755 | 0o600)
                    os.utime(destination, (member.mtime, member.mtime))
    except tarfile.TarError as exc:
        raise EnvironmentFailure(f"the tar stream from {where} is damaged: {exc}") from exc


def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Ship files as root's (the server extracts with --no-same-owner anyway)."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def parse_stat(result: RunResult) -> FileStat:
    """``stat -c '%f %u %g %s %d'``: raw mode in hex, owner, group, size, device."""
    mode, uid, gid, size, device = result.out.split()
    return FileStat.from_mode(int(mode, 16), int(uid), int(gid), int(size), int(device))


def decode_path(data: bytes) -> str:
    return data.decode(errors="surrogateescape")


def raise_file_error(result: RunResult, system_path: str, label: str) -> None:
    """The snippets' answers for a missing path, a directory, no permission, as OSErrors."""
    if result.returncode == sh.NOT_REGULAR:
        raise NotRegularFile(f"{system_path} on {label} is not a regular file (a FIFO, a device or a socket)")
    kinds = {
        sh.MISSING: FileNotFoundError,
        sh.IS_DIR: IsADirectoryError,
        sh.NOT_DIR: NotADirectoryError,
        sh.NO_PERMISSION: PermissionError,
    }
    codes = {
        sh.MISSING: errno.ENOENT,
        sh.IS_DIR: errno.EISDIR,
        sh.NOT_DIR: errno.ENOTDIR,
        sh.NO_PERMISSION: errno.EACCES,
    }
    kind = kinds.get(result.returncode)
    if kind is not None:
        code = codes[result.returncode]
        raise kind(code, os.strerror(code), f"{label} {system_path}")


def write_error(result: RunResult, system_path: str, label: str) -> EnvironmentFailure:
    text = result.err.strip() or f"exit status {result.returncode}"
    if "No space left" in text or "Disk quota" in text:
        return EnvironmentFailure(
            f"no space left on the device while writing {system_path} on {label}",
            f"free space on the filesystem holding {system_path} (df -h) and run again",
        )
    if "Read-only file system" in text or "Permission denied" in text or "Operation not permitted" in text:
        return EnvironmentFailure(
            f"cannot write {system_path} on {label}: {text}",
            "check that the filesystem is writable and that the login is root (or set ssh_sudo)",
        )
    if result.returncode == 127:
        result.check(label)
    return EnvironmentFailure(f"cannot write {system_path} on {label}: {text}")
