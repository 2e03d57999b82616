"""Fleets of sandbox CentOS 6 nodes for the rollout tests.

``FleetRig`` writes N sandbox roots (toa_kernel.demo.sandbox, plus a boot id in
their proc/), a work directory that records the sample build and already holds
its bundle, an inventory, and a reboot hook (tests/fleet_hook.py) that reboots
a node with the boot lab (``lab``) or, for the fast tests of the scheduler,
writes the facts of grub.conf's default entry (``quick``). Nodes are reached
through a real sshd each (``ssh``: tests/sshd_support.py, host keys trusted in
the rig's own known_hosts) or as ``connection=local``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli_support import run_invoke
from conftest import PROJECT_DIR

from toa_kernel.core.console import Console
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.demo.sandbox import RUNNING, centos6_root
from toa_kernel.fleet.bundle import make_bundle
from toa_kernel.fleet.inventory import choose_hosts
from toa_kernel.fleet.rollout import Rollout, RolloutReport, RolloutRequest

HOOK = Path(__file__).with_name("fleet_hook.py")
QUICK_CHECKS = "boot,hooks,module-installed"  # what a sandbox can show (no toa loads in it)


def bundle_cache(base: Path, build: dict[str, Any]) -> Path:
    """The bundle of the sample build, made once (``make targz-pkg``) and copied into each rig."""
    work = base / "work"
    Workdir(work).ensure().update_manifest("build", build)
    settings = Settings.from_config(None, workdir=work, project_dir=PROJECT_DIR)
    made, _fresh = make_bundle(settings, Console(quiet=True))
    return made.directory


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 (or link target) of every file under a root, for 'nothing changed' checks."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class FleetRig:
    base: Path
    build: dict[str, Any]
    bundle_dir: Path
    count: int = 3
    mode: str = "quick"
    kernel: Path | None = None
    servers: list[Any] = field(default_factory=list)  # one sshd per node (ssh rigs)
    lost: dict[str, list[str]] = field(default_factory=dict)
    kill_parent: dict[str, str] = field(default_factory=dict)
    hang: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.work = self.base / "work"
        workdir = Workdir(self.work).ensure()
        workdir.update_manifest("build", self.build)
        target = workdir.path / "bundles" / self.bundle_dir.name
        shutil.copytree(self.bundle_dir, target, dirs_exist_ok=True)
        self.release = self.build["release"]
        self.names = [f"node{i}" for i in range(1, self.count + 1)]
        self.roots = {name: self.make_root(name) for name in self.names}
        self.known_hosts = self.base / "known_hosts"
        self.known_hosts.touch()
        for server in self.servers:
            server.trust(self.known_hosts)
        self.inventory = self.base / "hosts.ini"
        self.inventory.write_text(self.inventory_text())
        self.calls = self.base / "hook-calls.log"
        self.calls.touch()

    def make_root(self, name: str) -> Path:
        root = centos6_root(self.base / name)
        boot_id = root / "proc" / "sys" / "kernel" / "random" / "boot_id"
        boot_id.parent.mkdir(parents=True, exist_ok=True)
        boot_id.write_text(str(uuid.uuid4()) + "\n")
        return root

    def inventory_text(self) -> str:
        lines = ["# fleet test rig", "[nodes]"]
        for index, name in enumerate(self.names):
            if self.servers:
                server = self.servers[index]
                lines.append(
                    f"{name} host=127.0.0.1 port={server.port} user=root key={server.client_key} "
                    f"legacy_ssh={'true' if server.profile == 'legacy' else 'false'} root={self.roots[name]}"
                )
            else:
                lines.append(f"{name} connection=local root={self.roots[name]}")
        return "\n".join(lines) + "\n"

    # --- the reboot hook -------------------------------------------------------------------

    def hook_command(self) -> str:
        config = self.base / "hook.json"
        config.write_text(
            json.dumps(
                {
                    "mode": self.mode,
                    "kernel": str(self.kernel or ""),
                    "lost": self.lost,
                    "kill_parent": self.kill_parent,
                    "hang": self.hang,
                    "calls": str(self.calls),
                }
            )
        )
        return f"{sys.executable} {HOOK} {config}"

    def hook_calls(self) -> list[str]:
        return self.calls.read_text().splitlines()

    # --- running a rollout ---------------------------------------------------------------------

    def settings(self, **values: Any) -> Settings:
        base: dict[str, Any] = {
            "workdir": self.work,
            "project_dir": PROJECT_DIR,
            "ssh_known_hosts": self.known_hosts,
            "reboot_hook": self.hook_command(),
            "boot_timeout": 300.0 if self.mode == "lab" else 30.0,
        }
        base.update(values)
        return Settings.from_config(None, **base)

    def env(self, **values: str) -> dict[str, str]:
        env = {
            "INVOKE_TOA_SSH_KNOWN_HOSTS": str(self.known_hosts),
            "INVOKE_TOA_REBOOT_HOOK": self.hook_command(),
            "INVOKE_TOA_BOOT_TIMEOUT": "300" if self.mode == "lab" else "30",
            "PYTHONPATH": f"{PROJECT_DIR}{os.pathsep}{Path(__file__).parent}",
        }
        env.update(values)
        return env

    def rollout(self, hosts: str | None = None, **request: Any) -> RolloutReport:
        """A rollout in this process (the scheduler's tests)."""
        settings = self.settings(**request.pop("settings", {}))
        request.setdefault("checks", QUICK_CHECKS)
        chosen, source = choose_hosts(settings, self.inventory, hosts)
        bundle_settings = Settings.from_config(None, workdir=self.work, project_dir=PROJECT_DIR)
        made, _ = make_bundle(bundle_settings, Console(quiet=True))
        return Rollout(settings, chosen, made, RolloutRequest(**request), Console(quiet=True), source).run()

    def invoke(self, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> Any:
        """``invoke rollout ...`` (or another task) as a user runs it."""
        return run_invoke(*args, env={**self.env(), **(env or {})}, cwd=self.base, timeout=timeout)

    def rollout_args(self, *extra: str) -> list[str]:
        return [
            "rollout",
            "--inventory",
            str(self.inventory),
            "--workdir",
            str(self.work),
            "--checks",
            QUICK_CHECKS,
            *extra,
        ]

    # --- what the nodes show ----------------------------------------------------------------

    def path(self, name: str, system_path: str) -> Path:
        return self.roots[name] / system_path.lstrip("/")

    def running(self, name: str) -> str:
        return self.path(name, "/proc/sys/kernel/osrelease").read_text().strip()

    def installkernel_calls(self, name: str) -> int:
        log = self.path(name, "/var/log/installkernel.log")
        return len(log.read_text().splitlines()) if log.exists() else 0

    def boots(self, name: str) -> list[dict[str, Any]]:
        log = self.path(name, "/var/log/lab-boots.log")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def state(self, name: str) -> dict[str, Any]:
        found = list((self.work / "fleet").glob(f"*/hosts/{name}.json"))
        return json.loads(found[0].read_text()) if found else {}

    def grub_conf(self, name: str) -> str:
        return self.path(name, "/boot/grub/grub.conf").read_text()


__all__ = ["RUNNING", "FleetRig", "bundle_cache", "tree_digest"]
