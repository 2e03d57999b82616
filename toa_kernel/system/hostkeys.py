"""Host keys: trust on first use, explicitly, and never a changed key.

Paramiko's ``AutoAddPolicy`` (Fabric's default) accepts any key from any host;
this module replaces it. Known keys come from the tool's own known-hosts file
(setting ``ssh_known_hosts``, written only when told to) and the user's
``~/.ssh/known_hosts`` (read, never written), in OpenSSH's format (plain or
hashed host names, ``[host]:port`` for ports other than 22).

- A host with no recorded key is refused with its key type and SHA256
  fingerprint (compare it with ``ssh-keygen -lf /etc/ssh/ssh_host_rsa_key.pub``
  on the server's console) and the flag that accepts it.
- With ``ssh_accept_new_host_key`` the key is appended to the tool's file.
- A key that differs from the recorded one is refused, always, naming both
  fingerprints and the file and line to remove once the change is understood.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, HostKeys

from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import atomic_write

USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class KnownKey:
    """One recorded key for a host, and where it is written."""

    key: paramiko.PKey
    path: Path
    lineno: int


def host_matches(name: str, patterns: list[str]) -> bool:
    """True when ``name`` is one of a known_hosts line's (plain or hashed) names."""
    for pattern in patterns:
        if pattern.startswith("|1|"):
            if HostKeys.hash_host(name, pattern) == pattern:
                return True
        elif pattern == name:
            return True
    return False


def read_known(path: Path, name: str) -> list[KnownKey]:
    """Keys recorded for ``name`` in one known_hosts file (bad lines are skipped)."""
    try:
        lines = path.expanduser().read_text(errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    found = []
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(text, lineno)
        except (paramiko.SSHException, ValueError, TypeError):
            continue
        if entry is not None and entry.key is not None and host_matches(name, entry.hostnames):
            found.append(KnownKey(entry.key, path.expanduser(), lineno))
    return found


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown hosts, or record them when accepting new keys was asked for."""

    def __init__(self, tool_file: Path, accept_new: bool) -> None:
        self.tool_file = tool_file.expanduser()
        self.accept_new = accept_new
        self.recorded: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise UserError(
                f"the SSH host key of {hostname} is not known: {key.get_name()} {fingerprint(key)}",
                "check the fingerprint on the server (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then "
                f"run again with --accept-new-host-key to record it in {self.tool_file}",
            )
        record_key(self.tool_file, hostname, key)
        self.recorded = fingerprint(key)


def record_key(path: Path, hostname: str, key: paramiko.PKey) -> None:
    """Append ``hostname key`` to a known_hosts file (atomically; created 0600)."""
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n".encode()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, old + line, mode=0o600)


def known_keys(name: str, tool_file: Path) -> list[KnownKey]:
    """What the tool's file and the user's known_hosts record for ``name``."""
    return read_known(tool_file, name) + read_known(USER_KNOWN_HOSTS, name)


def load_into(client: paramiko.SSHClient, name: str, keys: list[KnownKey]) -> None:
    """Give paramiko the recorded keys so it compares the server's key with them."""
    store = client.get_host_keys()
    for known in keys:
        store.add(name, known.key.get_name(), known.key)


def changed_key_error(name: str, got: paramiko.PKey, keys: list[KnownKey]) -> UserError:
    """The error for a server whose key differs from the recorded one."""
    same_type = [k for k in keys if k.key.get_name() == got.get_name()] or keys
    recorded = same_type[0] if same_type else None
    where = f"{recorded.path} line {recorded.lineno}" if recorded else "the known-hosts files"
    expected = f"{recorded.key.get_name()} {fingerprint(recorded.key)}" if recorded else "another key"
    return UserError(
        f"the SSH host key of {name} has CHANGED: recorded {expected} ({where}), "
        f"the server sent {got.get_name()} {fingerprint(got)}; someone may be intercepting the "
        "connection, or the server was reinstalled",
        f"if the change is expected, remove line {recorded.lineno if recorded else '?'} of "
        f"{recorded.path if recorded else 'the file'} (ssh-keygen -R '{name}' -f FILE) and run again "
        "with --accept-new-host-key",
    )
