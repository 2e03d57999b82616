"""Installing the kernel's files: modules into /lib/modules/R, kernel into /boot.

``make modules_install`` (``INSTALL_MOD_PATH=ROOT`` under another root) installs
the modules and runs ``depmod -b``. The kernel goes to /boot the way the kernel's
``arch/x86/boot/install.sh`` does it on CentOS 6: ``/sbin/installkernel`` (which
runs new-kernel-pkg: copy, dracut initramfs, grubby entry at index 0 with the old
default kept). Under another root the host's own installkernel must never run:
the root's ``sbin/installkernel`` is called directly with install.sh's four
arguments, acting on that root; without one the files are copied here and no
initramfs is made.
"""

from __future__ import annotations

import filecmp
import functools
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toa_kernel.boot.preflight import BuildArtifacts
from toa_kernel.core.errors import EnvironmentFailure, ToolMissing, UserError
from toa_kernel.core.fileops import atomic_write
from toa_kernel.core.layout import BOOT_DIR, INSTALLKERNEL, MODULES_DIR
from toa_kernel.core.plan import Change, Plan
from toa_kernel.system.rootfs import Root
from toa_kernel.system.runtime import read_text, tail_lines

LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class KernelFiles:
    """Where release ``R``'s files live under a root."""

    root: Root
    release: str

    def boot(self, name: str) -> Path:
        return self.root.path(f"{BOOT_DIR}/{name}-{self.release}")

    @property
    def vmlinuz(self) -> Path:
        return self.boot("vmlinuz")

    @property
    def system_map(self) -> Path:
        return self.boot("System.map")

    @property
    def config(self) -> Path:
        return self.boot("config")

    @property
    def initramfs(self) -> Path:
        return self.root.path(f"{BOOT_DIR}/initramfs-{self.release}.img")

    @property
    def modules_dir(self) -> Path:
        return self.root.path(f"{MODULES_DIR}/{self.release}")

    @property
    def modules_dep(self) -> Path:
        return self.modules_dir / "modules.dep"

    def all_paths(self) -> list[Path]:
        return [self.vmlinuz, self.system_map, self.config, self.initramfs, self.modules_dir]

    def present(self) -> list[str]:
        """System paths of the release's files that exist now."""
        return [self.root.system_path(p) for p in self.all_paths() if p.exists()]

    def toa_modules(self) -> list[Path]:
        if not self.modules_dir.is_dir():
            return []
        return sorted(self.modules_dir.rglob("toa.ko"))

    def dep_knows_toa(self) -> bool:
        text = read_text(self.root, f"{MODULES_DIR}/{self.release}/modules.dep")
        if text is None:
            return False
        return any(
            line.partition(":")[0].strip().rsplit("/", 1)[-1] == "toa.ko"
            for line in text.splitlines()
            if ":" in line
        )

    def boot_ready(self, artifacts: BuildArtifacts, initramfs: bool) -> bool:
        """The kernel and System.map in /boot are the built ones (and the initramfs exists)."""
        return (
            same_file(self.vmlinuz, artifacts.bzimage)
            and same_file(self.system_map, artifacts.system_map)
            and (self.initramfs.is_file() or not initramfs)
        )

    def modules_ready(self, artifacts: BuildArtifacts) -> bool:
        """toa.ko installed is the built one and ``modules.dep`` knows it."""
        return any(same_file(p, artifacts.toa_ko) for p in self.toa_modules()) and self.dep_knows_toa()


def same_file(installed: Path, built: Path) -> bool:
    return installed.is_file() and filecmp.cmp(installed, built, shallow=False)


def root_installkernel(root: Root) -> Path | None:
    """The root's own ``/sbin/installkernel`` when it is executable."""
    path = root.resolve(INSTALLKERNEL)
    return path if path.is_file() and os.access(path, os.X_OK) else None


class CommandLog:
    """Runs commands with their output appended to one log file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def run(self, argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
            raise ToolMissing(argv[0], f"install {Path(argv[0]).name}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(argv)}\n".encode())
            log.flush()
            result = subprocess.run(
                list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        if result.returncode != 0:
            raise EnvironmentFailure(
                f"'{shlex.join(argv)}' failed with status {result.returncode}:\n{self.tail()}",
                f"read {self.log_path}, fix the cause and run again (the old kernel is still the default)",
            )

    def tail(self) -> str:
        try:
            lines = tail_lines(self.log_path)
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in lines[-LOG_TAIL_LINES:])


def modules_install_command(root: Root, artifacts: BuildArtifacts) -> list[str]:
    argv = ["make", "-C", str(artifacts.tree), "modules_install"]
    if not root.is_live:
        argv.append(f"INSTALL_MOD_PATH={root.base}")
    return argv


def kernel_install_command(root: Root, artifacts: BuildArtifacts) -> list[str] | None:
    """How the kernel goes to /boot; None when there is no installkernel to do it."""
    installer = root_installkernel(root)
    if installer is None:
        return None
    if root.is_live:
        return ["make", "-C", str(artifacts.tree), "install"]
    return [
        str(installer),
        artifacts.release,
        str(artifacts.bzimage),
        str(artifacts.system_map),
        str(root.path(BOOT_DIR)),
    ]


def copy_kernel(files: KernelFiles, artifacts: BuildArtifacts) -> None:
    """Install vmlinuz-R, System.map-R and config-R into /boot without installkernel."""
    atomic_write(files.vmlinuz, artifacts.bzimage.read_bytes(), mode=0o755, follow_symlinks=False)
    atomic_write(files.system_map, artifacts.system_map.read_bytes(), mode=0o644, follow_symlinks=False)
    if artifacts.config.is_file():
        atomic_write(files.config, artifacts.config.read_bytes(), mode=0o644, follow_symlinks=False)


def run_installkernel(
    log: CommandLog, argv: list[str], artifacts: BuildArtifacts, before: Callable[[], object] | None
) -> None:
    if before is not None:
        before()
    log.run(argv, cwd=artifacts.tree)


def plan_kernel_files(
    files: KernelFiles,
    artifacts: BuildArtifacts,
    initramfs: bool,
    log: CommandLog,
    before_installkernel: Callable[[], object] | None = None,
) -> Plan:
    """The commands that bring /lib/modules/R and /boot up to date (empty: they are).

    ``before_installkernel`` runs just before installkernel (which edits grub.conf).
    """
    root = files.root
    plan = Plan("kernel files")
    if not files.modules_ready(artifacts):
        modules_argv = modules_install_command(root, artifacts)
        plan.add(
            Change(
                summary=f"install the modules into {MODULES_DIR}/{artifacts.release}",
                action=functools.partial(log.run, modules_argv, cwd=artifacts.tree),
                command=modules_argv,
            )
        )
    if not files.boot_ready(artifacts, initramfs):
        kernel_argv = kernel_install_command(root, artifacts)
        if kernel_argv is not None:
            plan.add(
                Change(
                    summary=f"install the kernel into {BOOT_DIR} with {INSTALLKERNEL} (initramfs, entry)",
                    action=functools.partial(
                        run_installkernel, log, kernel_argv, artifacts, before_installkernel
                    ),
                    command=kernel_argv,
                )
            )
        else:
            plan.add(
                Change(
                    summary=f"copy vmlinuz-{artifacts.release}, System.map-{artifacts.release} and "
                    f"config-{artifacts.release} into {BOOT_DIR} (no installkernel: no initramfs is made)",
                    action=functools.partial(copy_kernel, files, artifacts),
                )
            )
    return plan


def run_depmod(files: KernelFiles, artifacts: BuildArtifacts, log: CommandLog) -> None:
    """``depmod -b ROOT -F System.map R``: what make's depmod.sh does when it can."""
    depmod = shutil.which("depmod") or next(
        (p for p in ("/sbin/depmod", "/usr/sbin/depmod") if os.access(p, os.X_OK)), None
    )
    if depmod is None:
        raise ToolMissing("depmod", "install module-init-tools (or kmod) so modules.dep can be made")
    argv = [depmod, "-a", "-b", str(files.root.base), "-F", str(artifacts.system_map), artifacts.release]
    log.run(argv)


def check_installed(
    files: KernelFiles, artifacts: BuildArtifacts, initramfs: bool, log: CommandLog
) -> list[str]:
    """Check what the install left; run depmod when make skipped it. Returns notes."""
    notes: list[str] = []
    release = artifacts.release
    for path, what in ((files.vmlinuz, "the kernel"), (files.system_map, "System.map")):
        if not path.is_file():
            raise EnvironmentFailure(
                f"{files.root.system_path(path)} ({what}) is missing after the install",
                f"read {log.log_path}; the old kernel is still the default",
            )
    if not files.initramfs.is_file():
        if initramfs:
            raise EnvironmentFailure(
                f"no initramfs {files.root.system_path(files.initramfs)} was made",
                f"run 'dracut -f /boot/initramfs-{release}.img {release}' (see {log.log_path}), then run "
                "again; or pass --no-initramfs if this kernel boots without one",
            )
        notes.append(f"no initramfs for {release} (--no-initramfs)")
    if not files.toa_modules():
        raise UserError(
            f"no toa.ko under {MODULES_DIR}/{release} after make modules_install",
            "check that net/Makefile builds net/toa/ (invoke build fixes it) and build again",
        )
    if not files.dep_knows_toa():
        run_depmod(files, artifacts, log)
        notes.append(f"ran depmod for {release} (make skipped it)")
        if not files.dep_knows_toa():
            raise EnvironmentFailure(
                f"{files.root.system_path(files.modules_dep)} does not list toa.ko even after depmod",
                f"read {log.log_path}; run 'depmod -a {release}' by hand and check its errors",
            )
    return notes
