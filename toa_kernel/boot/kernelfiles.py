"""Installing the kernel's files on a System: modules into /lib/modules/R, kernel into /boot.

The same steps for this machine and for a server over SSH:

- modules: the kernel's own ``make modules_install`` installs them into a staging
  directory of the work directory (``INSTALL_MOD_PATH=WORKDIR/stage/R``: make runs
  where the tree is, never on the system); what it installed is shipped to the
  system's ``/lib/modules/R`` (replacing ``kernel/`` there, as modules_install does;
  a tar stream over SSH), and the system's own ``depmod`` indexes them
  (``depmod -ae -F System.map R``, with ``-b ROOT`` under a root prefix).
- kernel: the way the kernel's ``arch/x86/boot/install.sh`` does it on CentOS 6, the
  system's own ``/sbin/installkernel R IMAGE MAP /boot`` (new-kernel-pkg: copy,
  dracut initramfs, grubby entry at index 0 with the old default kept), given the
  image and System.map copied to ``/var/tmp/toa-kernel-R/`` on the system first.
  Under a root prefix the root's own ``sbin/installkernel`` runs, with the root's
  ``boot/`` (the host's never does); without one the files are copied into /boot
  and no initramfs is made.
"""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toa_kernel.boot.preflight import BuildArtifacts
from toa_kernel.core.errors import EnvironmentFailure, ToolMissing, UserError
from toa_kernel.core.fileops import disk_error, remove_tree
from toa_kernel.core.layout import BOOT_DIR, INSTALLKERNEL, MODULES_DIR
from toa_kernel.core.plan import Change, Plan
from toa_kernel.source.download import sha256_of as sha256_file
from toa_kernel.system.api import NOT_FOUND_STATUS, RunResult, System
from toa_kernel.system.runtime import read_text, tail_lines

LOG_TAIL_LINES = 15
STAGE_DIR = "/var/tmp"
# Links modules_install makes to the build tree: they mean nothing on another machine.
TREE_LINKS = ("build", "source")


@dataclass(frozen=True)
class KernelFiles:
    """Where release ``R``'s files live on a system (system paths)."""

    system: System
    release: str

    def boot(self, name: str) -> str:
        return f"{BOOT_DIR}/{name}-{self.release}"

    @property
    def vmlinuz(self) -> str:
        return self.boot("vmlinuz")

    @property
    def system_map(self) -> str:
        return self.boot("System.map")

    @property
    def config(self) -> str:
        return self.boot("config")

    @property
    def initramfs(self) -> str:
        return f"{BOOT_DIR}/initramfs-{self.release}.img"

    @property
    def modules_dir(self) -> str:
        return f"{MODULES_DIR}/{self.release}"

    @property
    def modules_dep(self) -> str:
        return f"{self.modules_dir}/modules.dep"

    @property
    def stage(self) -> str:
        """Where the image and System.map wait on the system for installkernel and depmod."""
        return f"{STAGE_DIR}/toa-kernel-{self.release}"

    def all_paths(self) -> list[str]:
        return [self.vmlinuz, self.system_map, self.config, self.initramfs, self.modules_dir]

    def present(self) -> list[str]:
        """System paths of the release's files that exist now."""
        return [path for path in self.all_paths() if self.system.exists(path)]

    def is_file(self, path: str) -> bool:
        found = self.system.stat(path)
        return found is not None and found.kind == "file"

    def toa_modules(self) -> list[str]:
        return self.system.find(self.modules_dir, "toa.ko")

    def dep_knows_toa(self) -> bool:
        text = read_text(self.system, self.modules_dep)
        if text is None:
            return False
        return any(
            line.partition(":")[0].strip().rsplit("/", 1)[-1] == "toa.ko"
            for line in text.splitlines()
            if ":" in line
        )

    def same_file(self, installed: str, built: Path) -> bool:
        return self.system.sha256(installed) == sha256_file(built)

    def boot_ready(self, artifacts: BuildArtifacts, initramfs: bool) -> bool:
        """The kernel and System.map in /boot are the built ones (and the initramfs exists)."""
        return (
            self.same_file(self.vmlinuz, artifacts.bzimage)
            and self.same_file(self.system_map, artifacts.system_map)
            and (self.is_file(self.initramfs) or not initramfs)
        )

    def modules_ready(self, artifacts: BuildArtifacts) -> bool:
        """toa.ko installed is the built one and ``modules.dep`` knows it."""
        built = sha256_file(artifacts.toa_ko)
        installed = self.toa_modules()
        return any(self.system.sha256(p) == built for p in installed) and self.dep_knows_toa()


def root_installkernel(system: System) -> str | None:
    """The host path of the root's own ``/sbin/installkernel`` when it is an executable file."""
    found = system.stat(INSTALLKERNEL)
    if found is None or found.kind != "file" or not found.mode & 0o111:
        return None
    return system.host_path(system.resolve(INSTALLKERNEL))


class CommandLog:
    """Runs commands with their output appended to one log file (of this machine)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def run(self, argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        """Run a command on this machine (make in the tree)."""
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
            raise self.failure(argv, result.returncode)

    def run_on(self, system: System, argv: Sequence[str], timeout: float = 1800) -> RunResult:
        """Run a command on the system; its output goes to the log."""
        result = system.run(argv, timeout=timeout)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(argv)}   [on {system.label}]\n".encode())
            log.write(result.stdout + result.stderr)
        if result.returncode == NOT_FOUND_STATUS:
            result.check(system.label)  # a missing program: named as such
        if not result.ok:
            raise self.failure(argv, result.returncode, f" on {system.label}")
        return result

    def failure(self, argv: Sequence[str], code: int, where: str = "") -> EnvironmentFailure:
        return EnvironmentFailure(
            f"'{shlex.join(argv)}' failed{where} with status {code}:\n{self.tail()}",
            f"read {self.log_path}, fix the cause and run again (the old kernel is still the default)",
        )

    def tail(self) -> str:
        try:
            lines = tail_lines(self.log_path)
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in lines[-LOG_TAIL_LINES:])


def modules_install_command(artifacts: BuildArtifacts, stage: Path) -> list[str]:
    """The kernel's own modules_install, into the work directory's staging area."""
    return ["make", "-C", str(artifacts.tree), "modules_install", f"INSTALL_MOD_PATH={stage}"]


def depmod_command(files: KernelFiles, system_map: str) -> list[str]:
    """What the kernel's depmod.sh runs, on the system (``-b`` under a root prefix)."""
    system = files.system
    base = [] if system.is_live else ["-b", system.host_path("/")]
    program = system.which("depmod") or "depmod"
    return [program, "-ae", "-F", system.host_path(system_map), *base, files.release]


def kernel_install_command(files: KernelFiles) -> list[str] | None:
    """How the kernel goes to /boot: installkernel on the staged files (None: no installkernel)."""
    installer = root_installkernel(files.system)
    if installer is None:
        return None
    system = files.system
    return [
        installer,
        files.release,
        system.host_path(f"{files.stage}/vmlinuz"),
        system.host_path(f"{files.stage}/System.map"),
        system.host_path(BOOT_DIR),
    ]


def stage_boot_files(files: KernelFiles, artifacts: BuildArtifacts, image: bool = True) -> None:
    """Copy System.map (and the image) to the staging directory on the system."""
    system = files.system
    system.makedirs(files.stage, mode=0o700)
    system.copy_file_in(artifacts.system_map, f"{files.stage}/System.map", mode=0o644)
    if image:
        system.copy_file_in(artifacts.bzimage, f"{files.stage}/vmlinuz", mode=0o644)


def install_modules(files: KernelFiles, artifacts: BuildArtifacts, stage: Path, log: CommandLog) -> None:
    """make modules_install into ``stage`` (or, for a tree compiled on a build host, the
    modules it installed there), ship ``lib/modules/R`` to the system, depmod there."""
    try:
        remove_tree(stage)
    except OSError as exc:
        raise disk_error(exc, stage) from exc
    if artifacts.modules_tree is not None:
        built = artifacts.modules_tree
    else:
        log.run(modules_install_command(artifacts, stage), cwd=artifacts.tree)
        built = stage / "lib" / "modules" / files.release
    if not built.is_dir():
        raise EnvironmentFailure(
            f"make modules_install left no lib/modules/{files.release} in {stage}",
            f"read {log.log_path}; the release the tree reports must be {files.release}",
        )
    for name in TREE_LINKS:
        link = built / name
        if link.is_symlink():
            link.unlink()
    system = files.system
    system.makedirs(files.modules_dir)
    system.remove(f"{files.modules_dir}/kernel", recursive=True)
    system.put_tree(built, files.modules_dir)
    try:
        stage_boot_files(files, artifacts, image=False)
        log.run_on(system, depmod_command(files, f"{files.stage}/System.map"))
    finally:
        system.remove(files.stage, recursive=True)
    remove_tree(stage)


def run_installkernel(
    files: KernelFiles,
    artifacts: BuildArtifacts,
    log: CommandLog,
    argv: list[str],
    before: Callable[[], object] | None,
) -> None:
    system = files.system
    try:
        stage_boot_files(files, artifacts)
        if before is not None:
            before()
        log.run_on(system, argv)
    finally:
        system.remove(files.stage, recursive=True)


def copy_kernel(files: KernelFiles, artifacts: BuildArtifacts) -> None:
    """Install vmlinuz-R, System.map-R and config-R into /boot without installkernel."""
    system = files.system
    system.copy_file_in(artifacts.bzimage, files.vmlinuz, mode=0o755)
    system.copy_file_in(artifacts.system_map, files.system_map, mode=0o644)
    if artifacts.config.is_file():
        system.copy_file_in(artifacts.config, files.config, mode=0o644)


def plan_kernel_files(
    files: KernelFiles,
    artifacts: BuildArtifacts,
    initramfs: bool,
    log: CommandLog,
    stage: Path,
    before_installkernel: Callable[[], object] | None = None,
) -> Plan:
    """The changes that bring /lib/modules/R and /boot up to date (empty: they are).

    ``stage``: the work directory's staging area for modules_install;
    ``before_installkernel`` runs just before installkernel (which edits grub.conf).
    """
    plan = Plan("kernel files")
    release = artifacts.release
    if not files.modules_ready(artifacts):
        made = (
            f"modules_install into {stage}" if artifacts.modules_tree is None else "built on the build host"
        )
        plan.add(
            Change(
                summary=f"install the modules into {MODULES_DIR}/{release} on {files.system.label} "
                f"({made}, shipped, then depmod there)",
                action=functools.partial(install_modules, files, artifacts, stage, log),
                command=modules_install_command(artifacts, stage) if artifacts.modules_tree is None else None,
            )
        )
    if not files.boot_ready(artifacts, initramfs):
        kernel_argv = kernel_install_command(files)
        if kernel_argv is not None:
            plan.add(
                Change(
                    summary=f"install the kernel into {BOOT_DIR} with {INSTALLKERNEL} (initramfs, entry)",
                    action=functools.partial(
                        run_installkernel, files, artifacts, log, kernel_argv, before_installkernel
                    ),
                    command=kernel_argv,
                )
            )
        else:
            plan.add(
                Change(
                    summary=f"copy vmlinuz-{release}, System.map-{release} and "
                    f"config-{release} into {BOOT_DIR} (no installkernel: no initramfs is made)",
                    action=functools.partial(copy_kernel, files, artifacts),
                )
            )
    return plan


def run_depmod(files: KernelFiles, log: CommandLog) -> None:
    """``depmod -ae -F /boot/System.map-R R`` on the system: what make's depmod.sh does."""
    if files.system.which("depmod") is None:
        raise ToolMissing(
            "depmod",
            f"install module-init-tools (or kmod) on {files.system.label} so modules.dep can be made",
        )
    log.run_on(files.system, depmod_command(files, files.system_map))


def check_installed(
    files: KernelFiles, artifacts: BuildArtifacts, initramfs: bool, log: CommandLog
) -> list[str]:
    """Check what the install left; run depmod when it was skipped. Returns notes."""
    notes: list[str] = []
    release = artifacts.release
    for path, what in ((files.vmlinuz, "the kernel"), (files.system_map, "System.map")):
        if not files.is_file(path):
            raise EnvironmentFailure(
                f"{path} ({what}) is missing on {files.system.label} after the install",
                f"read {log.log_path}; the old kernel is still the default",
            )
    if not files.is_file(files.initramfs):
        if initramfs:
            raise EnvironmentFailure(
                f"no initramfs {files.initramfs} was made on {files.system.label}",
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
        run_depmod(files, log)
        notes.append(f"ran depmod for {release} (modules.dep did not list toa.ko)")
        if not files.dep_knows_toa():
            raise EnvironmentFailure(
                f"{files.modules_dep} does not list toa.ko even after depmod",
                f"read {log.log_path}; run 'depmod -a {release}' by hand and check its errors",
            )
    return notes
