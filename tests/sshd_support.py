"""Real OpenSSH servers for the tests: Debian's ``sshd`` on 127.0.0.1, one per call.

``start_sshd()`` runs ``sshd -D -e -f CONFIG`` as root on a free port with its own
host key, authorized_keys and client key in a fresh directory; any number can run
at once (the fleet tests use several). Profiles:

- ``modern``: Debian's defaults, ed25519 host and user keys.
- ``legacy``: only what CentOS 6's OpenSSH 5.3 offers: KexAlgorithms
  diffie-hellman-group14-sha1, HostKeyAlgorithms and PubkeyAcceptedAlgorithms
  ssh-rsa, Ciphers aes128-ctr, MACs hmac-sha1; an RSA user key.

Every command goes through a ``ForceCommand`` wrapper that logs it (NUL-separated,
with the user) and runs it with ``bash --posix -c`` under a PATH shaped like
CentOS 6: ``realpath`` and ``python*`` are shims that fail loudly, ``sync``
refuses arguments (coreutils 8.4 has no ``sync FILE``), ``sh`` is bash in posix
mode (CentOS's /bin/sh). ``missing_tools`` adds shims that act as absent
programs (exit 127, "command not found"). Exec channels only: there is no SFTP
subsystem (ForceCommand would catch it too). ``SetEnv HOME=`` points the login
shell away from the user's ~/.bashrc: Debian's bash sources it for every command
sshd runs, and this machine's root .bashrc (pyenv init) costs 0.7 s a command.

Non-root logins for the sudo tests: ``ensure_sudo_users()`` creates the system
users below if they are missing (no password, login by key only, shell bash)
and installs a sudoers drop-in for them (checked with ``visudo -c`` first);
``remove_sudo_rules()`` takes the drop-in away. The users stay.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from toa_kernel.core.sshtarget import SshTarget
from toa_kernel.system.sshconnect import SshOptions

SSHD = "/usr/sbin/sshd"
SYNC_WITH_OPERAND = re.compile(r"(^|[\s;&|(])sync[ \t]+[^\s;&|)#]")
SUDO_USER = "toa-ssh-sudo"  # NOPASSWD sudo, no tty needed
TTY_USER = "toa-ssh-tty"  # NOPASSWD sudo under "Defaults requiretty" (RHEL 6's default)
PASSWORD_USER = "toa-ssh-pw"  # sudo that asks for a password
SUDOERS_DROP_IN = Path("/etc/sudoers.d/toa-ssh-tests")
SUDOERS_RULES = f"""\
# Test users of toa-kernel's SSH tests (tests/sshd_support.py).
Defaults:{SUDO_USER},{TTY_USER},{PASSWORD_USER} !secure_path
Defaults:{TTY_USER} requiretty
{SUDO_USER} ALL=(root) NOPASSWD: ALL
{TTY_USER} ALL=(root) NOPASSWD: ALL
{PASSWORD_USER} ALL=(root) ALL
"""

LEGACY_CONFIG = """\
KexAlgorithms diffie-hellman-group14-sha1
HostKeyAlgorithms ssh-rsa
PubkeyAcceptedAlgorithms ssh-rsa
Ciphers aes128-ctr
MACs hmac-sha1
"""

WRAPPER = """#!/bin/bash
# ForceCommand: log the command, then run it the way CentOS 6 would.
if [ -z "${{SSH_ORIGINAL_COMMAND+set}}" ]; then echo "no interactive shells here" >&2; exit 1; fi
printf '%s\\t%s\\0' "$USER" "$SSH_ORIGINAL_COMMAND" >>{log}
export PATH={shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec /bin/bash --posix -c "$SSH_ORIGINAL_COMMAND"
"""

FORBIDDEN_SHIM = """#!/bin/sh
echo "$(basename "$0"): not available on CentOS 6 (test server shim)" >&2
exit 127
"""

MISSING_SHIM = """#!/bin/sh
echo "bash: $(basename "$0"): command not found" >&2
exit 127
"""

SYNC_SHIM = """#!/bin/sh
if [ $# -gt 0 ]; then echo "sync: extra operand '$1' (coreutils 8.4 syncs everything)" >&2; exit 1; fi
exec /bin/sync
"""

SH_SHIM = """#!/bin/sh
exec /bin/bash --posix "$@"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path, kind: str) -> Path:
    bits = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", "toa-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def python_names() -> set[str]:
    names = {"python", "python2", "python2.6", "python2.7", "python3"}
    for directory in [*os.environ.get("PATH", "").split(":"), "/usr/bin", "/usr/local/bin"]:
        with contextlib.suppress(OSError):
            names |= {entry for entry in os.listdir(directory) if entry.startswith("python")}
    return names


def write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@dataclass
class Sshd:
    """One running test sshd."""

    base: Path
    profile: str = "modern"
    missing_tools: tuple[str, ...] = ()
    port: int = 0
    process: subprocess.Popen | None = None
    stderr_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stderr_log = self.base / "sshd.log"

    @property
    def key_type(self) -> str:
        return "rsa" if self.profile == "legacy" else "ed25519"

    @property
    def host_key(self) -> Path:
        return self.base / f"ssh_host_{self.key_type}_key"

    @property
    def client_key(self) -> Path:
        return self.base / f"id_{self.key_type}"

    @property
    def command_log(self) -> Path:
        return self.base / "commands.log"

    def prepare(self) -> None:
        shims = self.base / "shims"
        shims.mkdir()
        for name in python_names() | {"realpath"}:
            write_executable(shims / name, FORBIDDEN_SHIM)
        for name in self.missing_tools:
            write_executable(shims / name, MISSING_SHIM)
        write_executable(shims / "sync", SYNC_SHIM)
        write_executable(shims / "sh", SH_SHIM)
        self.command_log.touch()
        self.command_log.chmod(0o666)
        write_executable(self.base / "force-command", WRAPPER.format(log=self.command_log, shims=shims))
        keygen(self.client_key, self.key_type)
        (self.base / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        self.new_host_key()

    def new_host_key(self) -> None:
        for old in (self.host_key, self.host_key.with_suffix(".pub")):
            old.unlink(missing_ok=True)
        keygen(self.host_key, self.key_type)

    def config_text(self) -> str:
        text = f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile none
AuthorizedKeysFile {self.base}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
ForceCommand {self.base}/force-command
SetEnv HOME={self.base}
LogLevel VERBOSE
"""
        return text + (LEGACY_CONFIG if self.profile == "legacy" else "")

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for _attempt in range(5):
            self.port = self.port or free_port()
            config = self.base / "sshd_config"
            config.write_text(self.config_text())
            with open(self.stderr_log, "ab") as log:
                self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)
            if self.wait_ready():
                return self
            self.stop_listener()
            self.port = 0
        raise RuntimeError(f"sshd did not start: {self.stderr_log.read_text()[-2000:]}")

    def wait_ready(self, seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                sock.settimeout(2)
                if sock.recv(64).startswith(b"SSH-2.0"):
                    return True
            time.sleep(0.05)
        return False

    def children(self) -> list[int]:
        """Pids of every process below the listener (connection sshds and their sessions)."""
        if self.process is None:
            return []
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [self.process.pid]
        while frontier:
            parent = frontier.pop()
            kids = [pid for pid, ppid in parents.items() if ppid == parent]
            found += kids
            frontier += kids
        return found

    def connection_sshds(self) -> list[int]:
        """Pids of the per-connection sshd processes (not the sessions they run)."""
        pids = []
        for pid in self.children():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/exe").resolve().name.startswith("sshd"):
                    pids.append(pid)
        return pids

    def kill_connections(self) -> int:
        """SIGKILL every connection's sshd: to the client, the host dropped. Returns how many."""
        pids = self.connection_sshds()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop_listener(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        """Stop the listener and every connection it still serves, and remove the directory."""
        pids = self.children()
        self.stop_listener()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    def restart(self, new_host_key: bool = False) -> None:
        """Stop and start again on the same port (with a new host key when asked)."""
        self.kill_connections()
        self.stop_listener()
        if new_host_key:
            self.new_host_key()
        self.start()

    # What a client needs.

    def target(self, user: str = "root") -> SshTarget:
        return SshTarget(user, "127.0.0.1", self.port)

    def host_key_line(self) -> str:
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"{self.target().known_hosts_name} {kind} {blob}\n"

    def trust(self, known_hosts: Path) -> Path:
        """Record this server's host key in a known_hosts file (as an operator who checked it)."""
        with open(known_hosts, "a") as out:
            out.write(self.host_key_line())
        return known_hosts

    def options(self, known_hosts: Path, **changes: object) -> SshOptions:
        values: dict = {
            "key": str(self.client_key),
            "known_hosts": known_hosts,
            "connect_timeout": 10.0,
            "legacy": self.profile == "legacy",
        }
        values.update(changes)
        return SshOptions(**values)  # type: ignore[arg-type]

    def commands(self) -> list[tuple[str, str]]:
        """(user, command) for every command the server ran, in order."""
        records = self.command_log.read_bytes().split(b"\0")
        pairs = [record.decode(errors="replace").split("\t", 1) for record in records if record]
        return [(user, command) for user, command in pairs]


def start_sshd(profile: str = "modern", missing_tools: tuple[str, ...] = ()) -> Sshd:
    """A running sshd in a fresh directory (readable by the test users); call ``stop()``."""
    base = Path(tempfile.mkdtemp(prefix="toa-sshd-"))
    base.chmod(0o755)
    server = Sshd(base, profile, missing_tools)
    try:
        server.prepare()
        return server.start()
    except BaseException:
        server.stop()
        raise


def ensure_user(name: str) -> None:
    """A system user with bash, no home, no password (key logins only)."""
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/bin/bash", name],
            check=True,
            capture_output=True,
        )
    # "*": no password, yet not "locked" ("!"), which sshd without PAM would refuse.
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)


def ensure_sudo_users() -> None:
    """The three sudo test users and their sudoers rules (validated before use)."""
    for name in (SUDO_USER, TTY_USER, PASSWORD_USER):
        ensure_user(name)
    staging = SUDOERS_DROP_IN.with_name(".toa-ssh-tests.new")  # a dotted name: sudo ignores it
    staging.write_text(SUDOERS_RULES)
    staging.chmod(0o440)
    subprocess.run(["visudo", "-c", "-q", "-f", str(staging)], check=True)
    staging.replace(SUDOERS_DROP_IN)


def remove_sudo_rules() -> None:
    SUDOERS_DROP_IN.unlink(missing_ok=True)


def forbidden_commands(commands: list[tuple[str, str]]) -> list[str]:
    """Logged commands CentOS 6 could not run: python, realpath, ``sync`` with an operand."""
    return [
        command
        for _user, command in commands
        if "python" in command or "realpath" in command or SYNC_WITH_OPERAND.search(command)
    ]


needs_sshd = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SSHD).exists(),
    reason="needs root and openssh-server (setup.sh installs it)",
)
