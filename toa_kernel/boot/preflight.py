"""Preflight: everything install-kernel checks before it writes anything.

Each check returns the problems it finds (errors with a message and a fix);
``require`` raises them together, so one run shows every problem at once and
nothing has been written when it does.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from toa_kernel.core.errors import EnvironmentFailure, ToaError, ToolMissing, UserError
from toa_kernel.core.layout import BOOT_DIR, CRON_FILE, MODULES_DIR, MODULES_SCRIPT, PROC_OSRELEASE
from toa_kernel.core.state import Workdir
from toa_kernel.system.api import System
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
    # build --host: lib/modules/R as modules_install made it on the build host, fetched back
    modules_tree: Path | None = None

    @property
    def config(self) -> Path:
        return self.tree / ".config"

    def modules(self) -> list[Path]:
        """Every module the build made (``make modules_install`` installs them all)."""
        where = self.modules_tree or self.tree
        return [path for path in where.rglob("*.ko") if path.is_file()]


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
            modules_tree=artifact_path(workdir, build["modules_tree"]) if build.get("modules_tree") else None,
        )
    except KeyError as exc:
        raise UserError(
            f"the build record in {workdir.manifest_path} lacks {exc}", "run 'invoke build' again"
        ) from None
    missing = [
        str(path)
        for path in (
            artifacts.tree,
            artifacts.bzimage,
            artifacts.system_map,
            artifacts.toa_ko,
            artifacts.modules_tree,
        )
        if path is not None and not path.exists()
    ]
    if missing:
        raise UserError(
            f"build artifacts of {built} are missing: {', '.join(missing)}",
            "run 'invoke build' again (was the work directory cleaned?)",
        )
    return artifacts


def running_release(system: System) -> str | None:
    """The release of the kernel running the root (``/proc/sys/kernel/osrelease``)."""
    return (read_text(system, PROC_OSRELEASE, limit=256) or "").strip() or None


def privileges(system: System, euid: int | None = None) -> list[ToaError]:
    """Changing the live system needs root (a root login, or sudo on a server)."""
    if not system.is_live:
        return []
    euid = system.effective_uid() if euid is None else euid
    if euid == 0:
        return []
    if system.host:
        return [
            UserError(
                f"installing a kernel on {system.host} changes /boot, /lib/modules and /etc: the login "
                "must be root",
                "log in as root (--host root@HOST), or pass --sudo for a login with NOPASSWD sudo",
            )
        ]
    return [
        UserError(
            "installing a kernel changes /boot, /lib/modules and /etc: it needs root privileges",
            "run it as root (sudo -E invoke ...), or pass --root DIR to act on a copy",
        )
    ]


def not_running(system: System, release: str, force: bool) -> list[ToaError]:
    """Reinstalling over the running kernel needs ``--force``."""
    if not force and running_release(system) == release:
        return [
            UserError(
                f"{release} is the running kernel: reinstalling replaces the modules it uses now",
                "boot another kernel first, or pass --force if you mean it",
            )
        ]
    return []


def tools(names: Iterable[str]) -> list[ToaError]:
    """Programs needed on the machine the tool runs on (where the kernel tree is)."""
    hints = {
        "make": "install make (yum install make)",
        "depmod": "install module-init-tools (yum install module-init-tools)",
    }
    return [ToolMissing(name, hints.get(name, f"install {name}")) for name in names if not shutil.which(name)]


def system_tools(system: System, names: Iterable[str]) -> list[ToaError]:
    """Programs needed on the system itself."""
    hints = {"depmod": "install module-init-tools (yum install module-init-tools)"}
    return [
        ToolMissing(name, f"on {system.label}: " + hints.get(name, f"install {name}"))
        for name in names
        if system.which(name) is None
    ]


def existing_ancestor(system: System, system_path: str) -> str:
    """The deepest existing directory (or file) on the way to ``system_path``."""
    path = PurePosixPath(system_path)
    while system.stat(str(path)) is None and path != path.parent:
        path = path.parent
    return str(path)


@dataclass(frozen=True)
class SpaceNeed:
    """Bytes a step will write into one directory of the system."""

    directory: str  # a system path
    label: str
    size: int


def with_margin(size: int) -> int:
    return math.ceil(size * MARGIN_FACTOR) + MARGIN_BYTES


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def initramfs_estimate(system: System, artifacts: BuildArtifacts) -> int:
    """The largest initramfs already in /boot, or a multiple of the kernel's size."""
    try:
        names = system.listdir(BOOT_DIR)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    images = [n for n in names if n.endswith(".img") and n.startswith(("initramfs-", "initrd-"))]
    sizes = [found.size for n in images if (found := system.stat(f"{BOOT_DIR}/{n}")) is not None]
    return max([INITRAMFS_TO_KERNEL * file_size(artifacts.bzimage), *sizes])


def boot_need(system: System, artifacts: BuildArtifacts, initramfs: bool, grub_size: int) -> SpaceNeed:
    """/boot: kernel, System.map, config, initramfs, grub.conf backups and temp file."""
    size = file_size(artifacts.bzimage) + file_size(artifacts.system_map) + file_size(artifacts.config)
    if initramfs:
        size += initramfs_estimate(system, artifacts)
    size += 3 * grub_size
    return SpaceNeed(BOOT_DIR, BOOT_DIR, with_margin(size))


def modules_need(artifacts: BuildArtifacts) -> SpaceNeed:
    """/lib/modules: every module of the tree plus depmod's indexes (about a tenth more)."""
    size = sum(file_size(path) for path in artifacts.modules())
    return SpaceNeed(MODULES_DIR, MODULES_DIR, with_margin(math.ceil(size * 1.1)))


def free_space(system: System, needs: Iterable[SpaceNeed]) -> list[ToaError]:
    """Enough free space for every need, needs on one filesystem added together."""
    by_device: dict[int, list[SpaceNeed]] = {}
    free: dict[int, int] = {}
    anchors: dict[int, str] = {}
    for need in needs:
        anchor = existing_ancestor(system, need.directory)
        found = system.stat(anchor)
        device = found.device if found is not None else 0
        by_device.setdefault(device, []).append(need)
        free[device] = system.free_bytes(anchor)
        anchors.setdefault(device, anchor)
    problems: list[ToaError] = []
    for device, group in by_device.items():
        wanted = sum(need.size for need in group)
        if wanted > free[device]:
            where = " and ".join(need.label for need in group)
            place = system.host_path(anchors[device])
            problems.append(
                EnvironmentFailure(
                    f"not enough free space for {where} on {system.label} (the filesystem of {place}): "
                    f"need about {wanted / MiB:.1f} MiB (estimated, with margin), "
                    f"{free[device] / MiB:.1f} MiB free",
                    f"free space in {place} (remove old kernels: "
                    "package-cleanup --oldkernels --count=2) and run again",
                )
            )
    return problems


def directories(system: System) -> list[ToaError]:
    """/boot and /lib/modules exist and can be written."""
    problems: list[ToaError] = []
    boot = system.stat(BOOT_DIR)
    if boot is None or boot.kind != "dir":
        problems.append(
            UserError(f"{BOOT_DIR} does not exist on {system.label}", "check --root (it must hold /boot)")
        )
    for directory, label in ((BOOT_DIR, BOOT_DIR), (existing_ancestor(system, MODULES_DIR), MODULES_DIR)):
        found = system.stat(directory)
        if found is not None and found.kind == "dir" and not system.writable(directory):
            problems.append(
                EnvironmentFailure(
                    f"{label} is not writable ({system.host_path(directory)} on {system.label})",
                    "remount it read-write (mount -o remount,rw /boot) and run as root",
                )
            )
    return problems


def inside_root(system: System) -> list[ToaError]:
    """The directories written into must not lead out of the root through a symlink
    (commands such as installkernel and depmod follow the host's links, not the root's)."""
    if system.is_live:
        return []
    base = PurePosixPath(system.host_realpath("/"))
    problems: list[ToaError] = []
    for system_path in (
        BOOT_DIR,
        MODULES_DIR,
        str(PurePosixPath(MODULES_SCRIPT).parent),
        str(PurePosixPath(CRON_FILE).parent),
    ):
        real = PurePosixPath(system.host_realpath(system_path))
        if real != base and base not in real.parents:
            problems.append(
                UserError(
                    f"{system_path} under {system.root} leads out of it, to {real}",
                    "use a root whose directories are inside it (relative links only), or --root /",
                )
            )
    return problems
