"""Opening the SSH connection: Fabric ``Connection``, safe host keys, clear errors.

One ``fabric.Connection`` per server, its ``SSHClient`` given ``HostKeyPolicy``
(system/hostkeys.py) in place of Fabric's AutoAddPolicy. No ``~/.ssh/config`` is
read (what the tool connects to is what the settings say). Every foreseeable
failure of the connection becomes a ``ToaError`` saying what to change:
wrong host or port, nothing answering, a refused login, a key that cannot be
read, an unknown or changed host key.

Legacy servers (CentOS 6: OpenSSH 5.3) send no ``server-sig-algs``, so an RSA
login signed with rsa-sha2 fails; ``legacy`` makes the login use ssh-rsa
(Paramiko's ``disabled_algorithms={'pubkeys': ['rsa-sha2-256', 'rsa-sha2-512']}``).
Paramiko 5 has dropped ssh-rsa host keys entirely, so such a server's host key
cannot be checked by it: the project pins ``paramiko<5``.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fabric
import paramiko

from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.settings import Settings
from toa_kernel.core.sshtarget import SshTarget, resolve_target
from toa_kernel.system.hostkeys import HostKeyPolicy, changed_key_error, known_keys, load_into

LEGACY_DISABLED = {"pubkeys": ["rsa-sha2-256", "rsa-sha2-512"]}
LEGACY_FIX = (
    "CentOS 6 / OpenSSH older than 7.2 takes RSA logins signed with ssh-rsa only: "
    "set ssh_legacy (--legacy-ssh, INVOKE_TOA_SSH_LEGACY=1) for this host"
)


# What Paramiko says when the port is open but no SSH greeting or key exchange follows.
NO_GREETING = ("banner", "No existing session", "Negotiation timed out")


class HostUnreachable(EnvironmentFailure):
    """No SSH server could be reached (refused, timed out, no greeting)."""


class ConnectionLost(EnvironmentFailure):
    """The connection dropped while a command ran."""


@dataclass(frozen=True)
class SshOptions:
    """How to connect: key, host keys, timeouts, sudo, legacy algorithms."""

    key: str = ""
    known_hosts: Path = Path("~/.config/toa-kernel/known_hosts")
    accept_new_host_key: bool = False
    connect_timeout: float = 10.0
    legacy: bool = False
    sudo: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> SshOptions:
        return cls(
            key=settings.ssh_key,
            known_hosts=settings.ssh_known_hosts,
            accept_new_host_key=settings.ssh_accept_new_host_key,
            connect_timeout=settings.ssh_connect_timeout,
            legacy=settings.ssh_legacy,
            sudo=settings.ssh_sudo,
        )


def target_of(settings: Settings) -> SshTarget:
    return resolve_target(settings.host, settings.ssh_user, settings.ssh_port)


def connect_kwargs(options: SshOptions) -> dict[str, Any]:
    """Paramiko ``connect`` arguments: the key (or agent + default keys), legacy, timeouts."""
    kwargs: dict[str, Any] = {
        "banner_timeout": options.connect_timeout,
        "auth_timeout": max(options.connect_timeout, 30.0),
    }
    if options.key:
        kwargs.update(pkey=load_key(options.key), look_for_keys=False, allow_agent=False)
    if options.legacy:
        kwargs["disabled_algorithms"] = LEGACY_DISABLED
    kwargs.update(options.extra)
    return kwargs


def load_key(key_file: str) -> paramiko.PKey:
    """The private key in ``key_file`` (any type Paramiko knows), or a clear error."""
    path = Path(key_file).expanduser()
    fix = "pass --ssh-key with an unencrypted private key file (or leave it empty to use ssh-agent)"
    if not path.is_file():
        raise UserError(f"SSH key {path} does not exist", fix)
    try:
        return paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError) as exc:
        # cryptography raises TypeError for an encrypted OpenSSH-format key
        if isinstance(exc, TypeError) and "password" not in str(exc):
            raise UserError(f"cannot read the SSH key {path}: {exc}", fix) from exc
        raise UserError(
            f"the SSH key {path} is protected by a passphrase",
            "load it into ssh-agent (ssh-add KEY) and leave ssh_key empty",
        ) from exc
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise UserError(f"cannot read the SSH key {path}: {exc}", fix) from exc


def open_connection(target: SshTarget, options: SshOptions) -> fabric.Connection:
    """An open, authenticated connection whose host key was checked."""
    config = fabric.Config(lazy=True)
    connection = fabric.Connection(
        target.host,
        user=target.user,
        port=target.port,
        config=config,
        connect_timeout=max(1, round(options.connect_timeout)),
        connect_kwargs=connect_kwargs(options),
    )
    name = target.known_hosts_name
    keys = known_keys(name, options.known_hosts)
    connection.client.set_missing_host_key_policy(
        HostKeyPolicy(options.known_hosts, options.accept_new_host_key)
    )
    load_into(connection.client, name, keys)
    try:
        connection.open()
    except BaseException as exc:
        connection.close()
        raise connect_error(exc, target, options, keys) from exc
    no_delay(connection)
    return connection


def no_delay(connection: fabric.Connection) -> None:
    """Send each small request at once (TCP_NODELAY, as OpenSSH's client does): every step is
    many short exchanges, and Nagle's algorithm with delayed ACKs adds some 40 ms to each."""
    transport = connection.transport
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_error(exc: BaseException, target: SshTarget, options: SshOptions, keys: list) -> BaseException:
    """The ToaError for a failed connect (or ``exc`` itself when it is not foreseen)."""
    where = f"{target.host} port {target.port}"
    fix_address = "check the host and port (--host USER@HOST:PORT) and that sshd runs there"
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return changed_key_error(target.known_hosts_name, exc.key, keys)
    if isinstance(exc, paramiko.AuthenticationException):
        return auth_error(target, options)
    if isinstance(exc, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)):
        return HostUnreachable(f"cannot connect to {where}: connection refused", fix_address)
    if isinstance(exc, socket.gaierror):
        return UserError(f"cannot resolve the host name {target.host!r}: {exc.strerror}", fix_address)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return HostUnreachable(
            f"cannot connect to {where}: no answer within {options.connect_timeout:g} s",
            fix_address + "; raise ssh_connect_timeout for a slow network",
        )
    if isinstance(exc, paramiko.SSHException) and any(text in str(exc) for text in NO_GREETING):
        return HostUnreachable(
            f"no SSH server answered at {where} within {options.connect_timeout:g} s ({exc})", fix_address
        )
    if isinstance(exc, paramiko.SSHException) and "ncompatible" in str(exc):
        return EnvironmentFailure(f"{where}: no SSH algorithm in common with the server ({exc})", LEGACY_FIX)
    if isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
        return HostUnreachable(f"SSH connection to {where} failed: {exc}", fix_address)
    return exc


def auth_error(target: SshTarget, options: SshOptions) -> UserError:
    """A refused login; for an RSA key on a non-legacy connection, point at ssh_legacy."""
    key = options.key or "ssh-agent / ~/.ssh/id_*"
    fix = (
        f"check the user ({target.user}) and the key ({key}); the key must be in the server's authorized_keys"
    )
    if not options.legacy and (not options.key or isinstance(load_key(options.key), paramiko.RSAKey)):
        fix += "; " + LEGACY_FIX
    return UserError(f"the SSH server at {target} refused the login of {target.user} with {key}", fix)
