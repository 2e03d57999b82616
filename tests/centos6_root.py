"""Test helpers around the CentOS 6 sandbox root (``toa_kernel.demo.sandbox``):
snapshots of a root, the sample build, and a ``Sandbox`` that installs into it."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

from conftest import PROJECT_DIR
from node_support import Node

from toa_kernel.boot import grubconf
from toa_kernel.boot.install import InstallReport, InstallRequest, configure_grub, install_kernel
from toa_kernel.boot.rollback import RollbackReport, rollback
from toa_kernel.core.console import Console
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.demo.sandbox import (  # noqa: F401 - re-exported for the tests
    GRUB,
    INSTALLKERNEL,
    KERNEL_ARGS,
    OLDER,
    RUNNING,
    centos6_root,
    grub_conf,
    write,
)
from toa_kernel.system.api import System
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.rootfs import Root


def snapshot(base: Path) -> dict[str, tuple]:
    """Every path under ``base`` with its type, mode and content hash (or link target)."""
    found: dict[str, tuple] = {}
    for directory, dirs, files in os.walk(base):
        for name in dirs + files:
            path = Path(directory) / name
            st = path.lstat()
            key = str(path.relative_to(base))
            if stat.S_ISLNK(st.st_mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[key] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[key] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, digest)
    return found


def build_sample(base: Path) -> dict:
    """Build the sample tree with ``invoke build``'s code; return the manifest's build section."""
    from build_support import build_settings, fetched_tree

    from toa_kernel.core.console import Console
    from toa_kernel.core.state import Workdir
    from toa_kernel.kernel.build import run_build

    settings = build_settings(base)
    fetched_tree(settings)
    run_build(settings, console=Console(quiet=True))
    section = Workdir(Path(settings.workdir)).section("build")
    assert section.get("status") == "ok", section
    return section


class Sandbox:
    """A CentOS 6 root, a work directory that records the sample build, and settings.

    ``system`` is the root as the steps reach it: a ``LocalSystem``, or with ``node``
    (conftest's fixture) whatever kind the test runs with, SSH included. ``flags`` are
    the command-line flags naming that system.
    """

    def __init__(self, base: Path, build: dict, node: Node | None = None, **root_options: object) -> None:
        self.root = Root.of(centos6_root(base / "root", **root_options))
        self.workdir = Workdir(base / "work").ensure()
        self.workdir.update_manifest("build", build)
        self.release = build["release"]
        self.output = io.StringIO()
        self.settings = Settings.from_config(
            None, workdir=base / "work", root=self.root.base, project_dir=PROJECT_DIR
        )
        self.system: System = node.open(self.root.base) if node is not None else LocalSystem(self.root)
        self.flags = node.flags(self.root.base) if node is not None else ["--root", str(self.root.base)]

    @property
    def remote(self) -> bool:
        return bool(self.system.host)

    def path(self, system_path: str) -> Path:
        return self.root.path(system_path)

    def install(self, **request: object) -> InstallReport:
        options = {k: request.pop(k) for k in ("startup", "kernel_args") if k in request}
        settings = self.settings.with_(**options)
        return install_kernel(
            settings, InstallRequest(**request), Console(stream=self.output), system=self.system
        )

    def grub(self, **options: object) -> InstallReport:
        return configure_grub(
            self.settings, console=Console(stream=self.output), system=self.system, **options
        )

    def rollback(self, **options: object) -> RollbackReport:
        self.output = io.StringIO()
        return rollback(self.settings, console=Console(stream=self.output), system=self.system, **options)

    def grub_config(self) -> grubconf.GrubConfig:
        return grubconf.parse(self.path(GRUB).read_text())
