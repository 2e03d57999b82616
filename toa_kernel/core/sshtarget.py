"""Where a remote system is: ``[USER@]HOST[:PORT]`` parsed and checked.

``host`` names the server the tool drives over SSH (empty: the local system).
``[::1]:2222`` writes an IPv6 address with a port; a bare IPv6 address has no port.
The user and port may also come from the ``ssh_user`` and ``ssh_port`` settings;
a value written in ``host`` and a different one in the setting is an error rather
than a silent choice.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass

from toa_kernel.core.errors import UserError

SSH_PORT = 22
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*\$?$")
HOST_FIX = "write the host as [USER@]HOST[:PORT], e.g. root@10.0.0.5 or admin@web1:2222"


@dataclass(frozen=True)
class SshTarget:
    """A user, host and port to connect to."""

    user: str
    host: str
    port: int = SSH_PORT

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files the host key under: ``host`` or ``[host]:port``."""
        return self.host if self.port == SSH_PORT else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def split_host(text: str) -> tuple[str, str, int]:
    """``[USER@]HOST[:PORT]`` -> (user or '', host, port or 0), checked."""
    spec = text.strip()
    user, at, rest = spec.rpartition("@")
    if not at:
        user, rest = "", spec
    port_text = ""
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise UserError(f"host {text!r}: unbalanced [ ] around an IPv6 address", HOST_FIX)
        port_text = tail[1:]
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host = rest
    check_host(host, text)
    if user:
        check_user(user, f"host {text!r}")
    port = check_port(port_text, f"host {text!r}") if port_text or rest.endswith(":") else 0
    return user, host, port


def check_host(host: str, text: str) -> None:
    if ":" in host:  # an IPv6 address
        if not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            raise UserError(f"host {text!r}: {host!r} is not an IPv6 address", HOST_FIX)
        return
    if not host or not HOST_RE.match(host):
        raise UserError(f"host {text!r}: {host!r} is not a host name or IP address", HOST_FIX)


def check_user(user: str, where: str) -> None:
    if not USER_RE.match(user):
        raise UserError(
            f"{where}: {user!r} is not a valid user name", "use a login name such as root or admin"
        )


def check_port(value: object, where: str) -> int:
    """A TCP port 1..65535 (from a string or an int)."""
    try:
        port = int(str(value).strip())
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise UserError(f"{where}: port {value!r} is not a number from 1 to 65535", HOST_FIX)
    return port


def resolve_target(host: str, ssh_user: str = "", ssh_port: int = 0) -> SshTarget:
    """Combine ``host`` with the ``ssh_user``/``ssh_port`` settings (conflicts are errors)."""
    user, name, port = split_host(host)
    if user and ssh_user and user != ssh_user:
        raise UserError(
            f"host {host!r} names user {user!r} but ssh_user is {ssh_user!r}",
            "give the user once: in the host (USER@HOST) or in ssh_user",
        )
    if port and ssh_port and port != ssh_port:
        raise UserError(
            f"host {host!r} names port {port} but ssh_port is {ssh_port}",
            "give the port once: in the host (HOST:PORT) or in ssh_port",
        )
    return SshTarget(user or ssh_user or getpass.getuser(), name, port or ssh_port or SSH_PORT)
