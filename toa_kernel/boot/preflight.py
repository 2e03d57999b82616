"""Preflight: everything install-kernel checks before it writes anything.

Each check returns the problems it finds (errors with a message and a fix);
``require`` raises them together, so one run shows every problem at once and
nothing has been written when it does.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toa_kernel.core.errors import EnvironmentFailure, ToaError, ToolMissing, UserError
from toa_kernel.core.layout import BOOT_DIR, CRON_FILE, MODULES_DIR, MODULES_SCRIPT, PROC_OSRELEASE
from toa_kernel.core.state import Workdir
from toa_kernel.system.rootfs import Root
from toa_kernel.system.runtime import read_text

MiB = 1024 * 1024
MARGIN_FACTOR = 1.25
MARGIN_BYTES = 1 * MiB
# A dracut initramfs of a 2.6.32 kernel is several times its bzImage.
INITRAMFS_TO_KERNEL = 4


class PreflightFailed(ToaError):
    """One or more preflight checks failed; nothing was changed."""

    def __init__(self, problems: list[ToaError]) -> None:
        count = len(problems)
        super().__init__(
            f"preflight found {count} problem{'s' if count != 1 else ''}; nothing was changed",
            "fix the problems listed and run again",
        )
        self.problems = problems
        self.kind = problems[0].kind
        self.exit_code = problems[0].exit_code

    def render(self) -> str:
        lines = [f"{self.kind}: {self.message}"]
        for problem in self.problems:
            lines.append(f"  - {problem.message}")
            if problem.fix:
                lines.append(f"    fix: {problem.fix}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = super().as_dict()
        document["problems"] = [problem.as_dict() for problem in self.problems]
        return document


def require(problems: Iterable[ToaError]) -> None:
    """Raise ``PreflightFailed`` when there is any problem."""
    found = list(problems)
    if found:
        raise PreflightFailed(found)


@dataclass(frozen=True)
class BuildArtifacts:
    """What ``invoke build`` produced for one release (from the manifest)."""

    release: str
    tree: Path
    bzimage: Path
    system_map: Path
    toa_ko: Path

    @property
    def config(self) -> Path:
        return self.tree / ".config"

    def modules(self) -> list[Path]:
        """Every module the tree built (``make modules_install`` installs them all)."""
        return [path for path in self.tree.rglob("*.ko") if path.is_file()]


def artifact_path(workdir: Workdir, value: Any) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else workdir.path / path


def build_artifacts(workdir: Workdir, release: str | None = None) -> BuildArtifacts:
    """The last successful build from the manifest; a UserError when there is none usable."""
    build = workdir.section("build")
    if not build:
        raise UserError(
            f"no build is recorded in {workdir.manifest_path}",
            "run 'invoke fetch build' first (or pass the --workdir that holds the build)",
        )
    built = str(build.get("release") or "")
    if build.get("status") != "ok":
        raise UserError(
            f"the last build ({built or 'unknown release'}) did not succeed (status {build.get('status')!r})",
            "fix the build (see its log under the work directory's logs/) and run 'invoke build' again",
        )
    if release and release != built:
        raise UserError(
            f"the last build made {built}, not {release}",
            f"pass --release {built}, or build {release} first (EXTRAVERSION sets the release)",
        )
    try:
        artifacts = BuildArtifacts(
            release=built,
            tree=artifact_path(workdir, build["tree"]),
            bzimage=artifact_path(workdir, build["bzimage"]),
            system_map=artifact_path(workdir, build["system_map"]),
            toa_ko=artifact_path(workdir, build["toa_ko"]),
        )
    except KeyError as exc:
        raise UserError(
            f"the build record in {workdir.manifest_path} lacks {exc}", "run 'invoke build' again"
        ) from None
    missing = [
        str(path)
        for path in (artifacts.tree, artifacts.bzimage, artifacts.system_map, artifacts.toa_ko)
        if not path.exists()
    ]
    if missing:
        raise UserError(
            f"build artifacts of {built} are missing: {', '.join(missing)}",
            "run 'invoke build' again (was the work directory cleaned?)",
        )
    return artifacts


def running_release(root: Root) -> str | None:
    """The release of the kernel running the root (``/proc/sys/kernel/osrelease``)."""
    return (read_text(root, PROC_OSRELEASE, limit=256) or "").strip() or None


def privileges(root: Root, euid: int | None = None) -> list[ToaError]:
    """Changing the live system needs root."""
    euid = os.geteuid() if euid is None else euid
    if root.is_live and euid != 0:
        return [
            UserError(
                "installing a kernel changes /boot, /lib/modules and /etc: it needs root privileges",
                "run it as root (sudo -E invoke ...), or pass --root DIR to act on a copy",
            )
        ]
    return []


def not_running(root: Root, release: str, force: bool) -> list[ToaError]:
    """Reinstalling over the running kernel needs ``--force``."""
    if not force and running_release(root) == release:
        return [
            UserError(
                f"{release} is the running kernel: reinstalling replaces the modules it uses now",
                "boot another kernel first, or pass --force if you mean it",
            )
        ]
    return []


def tools(names: Iterable[str]) -> list[ToaError]:
    hints = {
        "make": "install make (yum install make)",
        "depmod": "install module-init-tools (yum install module-init-tools)",
    }
    return [ToolMissing(name, hints.get(name, f"install {name}")) for name in names if not shutil.which(name)]


def existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class SpaceNeed:
    """Bytes a step will write into one directory of the root."""

    directory: Path
    label: str
    size: int


def with_margin(size: int) -> int:
    return math.ceil(size * MARGIN_FACTOR) + MARGIN_BYTES


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def initramfs_estimate(root: Root, artifacts: BuildArtifacts) -> int:
    """The largest initramfs already in /boot, or a multiple of the kernel's size."""
    boot = root.path(BOOT_DIR)
    existing = [file_size(p) for pattern in ("initramfs-*.img", "initrd-*.img") for p in boot.glob(pattern)]
    return max([INITRAMFS_TO_KERNEL * file_size(artifacts.bzimage), *existing])


def boot_need(root: Root, artifacts: BuildArtifacts, initramfs: bool, grub_size: int) -> SpaceNeed:
    """/boot: kernel, System.map, config, initramfs, grub.conf backups and temp file."""
    size = file_size(artifacts.bzimage) + file_size(artifacts.system_map) + file_size(artifacts.config)
    if initramfs:
        size += initramfs_estimate(root, artifacts)
    size += 3 * grub_size
    return SpaceNeed(root.path(BOOT_DIR), BOOT_DIR, with_margin(size))


def modules_need(root: Root, artifacts: BuildArtifacts) -> SpaceNeed:
    """/lib/modules: every module of the tree plus depmod's indexes (about a tenth more)."""
    size = sum(file_size(path) for path in artifacts.modules())
    return SpaceNeed(root.path(MODULES_DIR), MODULES_DIR, with_margin(math.ceil(size * 1.1)))


def free_space(needs: Iterable[SpaceNeed]) -> list[ToaError]:
    """Enough free space for every need, needs on one filesystem added together."""
    by_device: dict[int, list[SpaceNeed]] = {}
    free: dict[int, int] = {}
    for need in needs:
        anchor = existing_ancestor(need.directory)
        st = os.statvfs(anchor)
        device = anchor.stat().st_dev
        by_device.setdefault(device, []).append(need)
        free[device] = st.f_bavail * st.f_frsize
    problems: list[ToaError] = []
    for device, group in by_device.items():
        wanted = sum(need.size for need in group)
        if wanted > free[device]:
            where = " and ".join(need.label for need in group)
            problems.append(
                EnvironmentFailure(
                    f"not enough free space for {where}: need about {wanted / MiB:.1f} MiB "
                    f"(estimated from the build, with margin), {free[device] / MiB:.1f} MiB free",
                    f"free space in {group[0].directory} (remove old kernels: package-cleanup "
                    "--oldkernels --count=2) and run again",
                )
            )
    return problems


def directories(root: Root) -> list[ToaError]:
    """/boot and /lib/modules exist and can be written."""
    problems: list[ToaError] = []
    boot = root.path(BOOT_DIR)
    if not boot.is_dir():
        problems.append(
            UserError(f"{BOOT_DIR} does not exist under {root.base}", "check --root (it must hold /boot)")
        )
    for directory, label in ((boot, BOOT_DIR), (existing_ancestor(root.path(MODULES_DIR)), MODULES_DIR)):
        if directory.is_dir() and not os.access(directory, os.W_OK | os.X_OK):
            problems.append(
                EnvironmentFailure(
                    f"{label} is not writable ({directory})",
                    "remount it read-write (mount -o remount,rw /boot) and run as root",
                )
            )
    return problems


def inside_root(root: Root) -> list[ToaError]:
    """The directories written into must not lead out of the root through a symlink."""
    if root.is_live:
        return []
    problems: list[ToaError] = []
    for system_path in (BOOT_DIR, MODULES_DIR, str(Path(MODULES_SCRIPT).parent), str(Path(CRON_FILE).parent)):
        real = Path(os.path.realpath(existing_ancestor(root.path(system_path))))
        if real != root.base and root.base not in real.parents:
            problems.append(
                UserError(
                    f"{system_path} under {root.base} leads out of it, to {real}",
                    "use a root whose directories are inside it (relative links only), or --root /",
                )
            )
    return problems
