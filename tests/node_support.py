"""Reaching a sandbox root as a ``System``: locally, or over SSH through the test sshd.

``Node(kind, server, known_hosts)`` opens roots with ``open(ROOT)`` (a ``LocalSystem``,
or an ``SshSystem`` on 127.0.0.1 with the server's key) and gives the command-line
flags that name the same system (``flags(ROOT)``), so a test drives the real
``invoke`` either way. The ``node`` fixture of conftest.py builds one per test.
"""

from __future__ import annotations

from pathlib import Path

from sshd_support import Sshd

from toa_kernel.system.api import System
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root
from toa_kernel.system.ssh import SshSystem


class Node:
    """Opens sandbox roots as Systems of one kind; closes them all at the end."""

    def __init__(
        self, kind: str, server: Sshd | None, known_hosts: Path, user: str = "root", sudo: bool = False
    ) -> None:
        self.kind = kind
        self.server = server
        self.known_hosts = known_hosts
        self.user = user
        self.sudo = sudo
        self.opened: list[System] = []

    @property
    def remote(self) -> bool:
        return self.kind == "ssh"

    def open(self, root: Path) -> System:
        if self.server is None:
            system: System = LocalSystem(Root.of(root))
        else:
            if not self.known_hosts.exists():
                self.server.trust(self.known_hosts)
            options = self.server.options(self.known_hosts, sudo=self.sudo)
            system = SshSystem.connect(self.server.target(self.user), options, str(root))
        self.opened.append(system)
        return system

    def flags(self, root: Path) -> list[str]:
        """``--root ROOT`` and, over SSH, ``--host``, ``--ssh-key``, ``--known-hosts``."""
        flags = ["--root", str(root)]
        if self.server is not None:
            if not self.known_hosts.exists():
                self.server.trust(self.known_hosts)
            target = self.server.target(self.user)
            flags += [
                "--host", f"{target.user}@{target.host}:{target.port}",
                "--ssh-key", str(self.server.client_key),
                "--known-hosts", str(self.known_hosts),
            ]  # fmt: skip
            flags += ["--legacy-ssh"] if self.server.profile == "legacy" else []
            flags += ["--sudo"] if self.sudo else []
        return flags

    def ssh_settings(self) -> dict[str, object]:
        """The settings that reach the server (``host``, ``ssh_key``, ``ssh_known_hosts``)."""
        assert self.server is not None
        if not self.known_hosts.exists():
            self.server.trust(self.known_hosts)
        target = self.server.target(self.user)
        return {
            "host": f"{target.user}@{target.host}:{target.port}",
            "ssh_key": str(self.server.client_key),
            "ssh_known_hosts": self.known_hosts,
            "ssh_legacy": self.server.profile == "legacy",
            "ssh_sudo": self.sudo,
        }

    def close(self) -> None:
        for system in self.opened:
            system.close()


class NodeRoot:
    """A sandbox root seen both ways: its files on this machine (``path``, ``base``) for the
    test's own checks, and the ``system`` the steps under test act on."""

    def __init__(self, root: Root, system: System) -> None:
        self.root = root
        self.system = system

    @property
    def base(self) -> Path:
        return self.root.base

    def path(self, system_path: str) -> Path:
        return self.root.path(system_path)
