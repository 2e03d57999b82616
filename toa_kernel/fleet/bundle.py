"""Build once, install on many: the bundle of one recorded build.

``make targz-pkg`` (Kbuild's own packaging target, in 2.6.32 as in the sample
tree) packs the built tree as ``linux-R.tar.gz``: ``boot/vmlinuz-R`` (the
bzImage), ``boot/System.map-R``, ``boot/config-R``, ``boot/vmlinux-R`` and
``lib/modules/R/`` as ``make modules_install`` lays it out. The bundle is that
tarball, unchanged, beside ``bundle.json``: the build record (the manifest's
``build`` section and the build's ``metadata.json``), the sha256 and size of
every member, the architecture (from the build's .config) and the tarball's
own sha256, which identifies the bundle and the rollout that installs it.

One bundle per build, made once in ``WORKDIR/bundles/BUILD_ID/``: Kbuild's
tarball is not byte-reproducible (file times), so a second run reuses the
bundle instead of packing again, and a rerun of a rollout installs the same
bytes. Before packing, the sha256 of the built bzImage, System.map and toa.ko
are taken; the tarball must carry exactly those (a tree rebuilt since the build
was recorded is refused rather than shipped).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.fileops import atomic_write_json
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.kernel import kbuild
from toa_kernel.kernel.metadata import read_metadata
from toa_kernel.source.download import sha256_of

BUNDLE_JSON = "bundle.json"
SCHEMA = 1
PACK_TARGET = "targz-pkg"
# Links Kbuild's modules_install leaves in /lib/modules/R, pointing at the build tree.
TREE_LINKS = ("build", "source")
UNPACK_LOCK = threading.Lock()


@dataclass(frozen=True)
class Bundle:
    """A bundle on this machine: the Kbuild tarball and what is known about it."""

    directory: Path
    release: str
    build_id: str
    arch: str
    sha256: str
    size: int
    tarball_name: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    @property
    def id(self) -> str:
        """Short form of the sha256 (directory names, reports)."""
        return self.sha256[:12]

    @property
    def tarball(self) -> Path:
        return self.directory / self.tarball_name

    @property
    def record(self) -> Path:
        return self.directory / BUNDLE_JSON

    def member(self, system_path: str) -> dict[str, Any] | None:
        """The recorded member for a system path (``/boot/vmlinuz-R``)."""
        return self.files.get("." + system_path)

    def sha_of(self, system_path: str) -> str | None:
        found = self.member(system_path)
        return None if found is None else found.get("sha256")

    @property
    def vmlinuz(self) -> str:
        return f"/boot/vmlinuz-{self.release}"

    @property
    def system_map(self) -> str:
        return f"/boot/System.map-{self.release}"

    @property
    def config(self) -> str:
        return f"/boot/config-{self.release}"

    @property
    def modules_dir(self) -> str:
        return f"/lib/modules/{self.release}"

    def toa_module(self) -> str | None:
        """System path of toa.ko in the bundle."""
        prefix = "." + self.modules_dir + "/"
        for name in self.files:
            if name.startswith(prefix) and name.endswith("/toa.ko"):
                return name[1:]
        return None

    def bytes_under(self, system_dir: str) -> int:
        prefix = "." + system_dir.rstrip("/") + "/"
        return sum(int(info.get("size") or 0) for name, info in self.files.items() if name.startswith(prefix))

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "release": self.release,
            "build_id": self.build_id,
            "arch": self.arch,
            "sha256": self.sha256,
            "size": self.size,
            "tarball": self.tarball_name,
            "made_with": f"make {PACK_TARGET}",
            "files": self.files,
            "build": self.build,
            "created_at": self.created_at,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "release": self.release,
            "build_id": self.build_id,
            "arch": self.arch,
            "size": self.size,
            "tarball": str(self.tarball),
        }


# --- reading ------------------------------------------------------------------------------------


def load_bundle(directory: Path) -> Bundle:
    """A bundle made before; its tarball must still have the recorded sha256."""
    record = Path(directory) / BUNDLE_JSON
    try:
        data = json.loads(record.read_text())
        bundle = Bundle(
            directory=Path(directory),
            release=data["release"],
            build_id=data["build_id"],
            arch=data["arch"],
            sha256=data["sha256"],
            size=int(data["size"]),
            tarball_name=data["tarball"],
            files=dict(data.get("files") or {}),
            build=dict(data.get("build") or {}),
            created_at=str(data.get("created_at") or ""),
        )
    except FileNotFoundError:
        raise UserError(
            f"no bundle at {directory} ({BUNDLE_JSON} is missing)", "run 'invoke bundle'"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"the bundle record {record} cannot be read: {exc}",
            f"remove {directory} and run 'invoke bundle' again",
        ) from None
    actual = sha256_of(bundle.tarball) if bundle.tarball.is_file() else None
    if actual != bundle.sha256:
        raise UserError(
            f"the bundle tarball {bundle.tarball} is {'missing' if actual is None else 'changed'} "
            f"(recorded sha256 {bundle.sha256[:12]}...)",
            f"remove {directory} and run 'invoke bundle' again (a rollout then installs a new bundle)",
        )
    return bundle


def bundle_dir(workdir: Workdir, build_id: str) -> Path:
    return workdir.path / "bundles" / build_id


def recorded_build(workdir: Workdir) -> dict[str, Any]:
    """The manifest's build section, which must be a successful build."""
    build = workdir.section("build")
    if not build:
        raise UserError(
            f"no build is recorded in {workdir.manifest_path}",
            "run 'invoke fetch build' first (or pass the --workdir that holds the build)",
        )
    if build.get("status") != "ok" or not build.get("release") or not build.get("build_id"):
        raise UserError(
            f"the last build ({build.get('release') or 'unknown release'}) did not succeed "
            f"(status {build.get('status')!r})",
            "fix the build and run 'invoke build' again",
        )
    return build


def current_bundle(settings: Settings) -> Bundle | None:
    """The bundle of the recorded build, when it was made already."""
    workdir = Workdir(Path(settings.workdir))
    build = recorded_build(workdir)
    directory = bundle_dir(workdir, str(build["build_id"]))
    return load_bundle(directory) if (directory / BUNDLE_JSON).exists() else None


# --- making ---------------------------------------------------------------------------------------


def arch_of_config(config: Path) -> str:
    """``uname -m`` of the machines this kernel is for, from its .config."""
    try:
        text = config.read_text(errors="replace")
    except OSError as exc:
        raise UserError(
            f"cannot read the build's .config ({config}): {exc}", "run 'invoke build' again"
        ) from None
    lines = {line.strip() for line in text.splitlines()}
    if "CONFIG_X86_64=y" in lines:
        return "x86_64"
    if "CONFIG_X86_32=y" in lines or "CONFIG_X86=y" in lines:
        return "i686"
    raise UserError(
        f"{config} names no x86 architecture (CONFIG_X86_64=y or CONFIG_X86_32=y)",
        "build the kernel for x86 (the LVS kernel is x86_64)",
    )


def built_files(build: dict[str, Any]) -> dict[str, Path]:
    """The built artifacts the tarball must carry unchanged."""
    tree = Path(str(build["tree"]))
    release = str(build["release"])
    found = {
        f"./boot/vmlinuz-{release}": Path(str(build.get("bzimage") or tree / "arch/x86/boot/bzImage")),
        f"./boot/System.map-{release}": Path(str(build.get("system_map") or tree / "System.map")),
        f"./boot/config-{release}": tree / ".config",
    }
    missing = [str(path) for path in found.values() if not path.is_file()]
    if not tree.is_dir() or missing:
        raise UserError(
            f"the build {build.get('build_id')} is recorded but its tree or artifacts are gone: "
            f"{', '.join(missing) or tree}",
            "run 'invoke build' again (was the work directory cleaned?)",
        )
    return found


def member_problem(name: str, info: tarfile.TarInfo, release: str) -> str | None:
    """Why a member may not be unpacked on a server (None: it may)."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return "leaves the unpack directory"
    parts = path.parts[1:] if path.parts and path.parts[0] == "." else path.parts
    inside = parts[:1] == ("boot",) or parts[:3] == ("lib", "modules", release) or len(parts) <= 2
    if not inside:
        return f"is outside boot/ and lib/modules/{release}/"
    if info.issym() and parts[-1:] not in [(link,) for link in TREE_LINKS]:
        return "is a symbolic link"
    if not (info.isreg() or info.isdir() or info.issym()):
        return "is not a file, directory or link"
    return None


def tarball_members(tarball: Path, release: str) -> dict[str, dict[str, Any]]:
    """sha256, size and mode of every regular member; refuse members a server should not unpack."""
    files: dict[str, dict[str, Any]] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for info in archive:
            problem = member_problem(info.name, info, release)
            if problem:
                raise EnvironmentFailure(
                    f"{tarball}: member {info.name} {problem}", "check the tree's buildtar"
                )
            if not info.isreg():
                continue
            handle = archive.extractfile(info)
            assert handle is not None
            digest = hashlib.sha256()
            for chunk in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023 - handle is this member's
                digest.update(chunk)
            name = info.name if info.name.startswith("./") else "./" + info.name
            files[name] = {"sha256": digest.hexdigest(), "size": info.size, "mode": format(info.mode, "04o")}
    return files


def check_members(
    files: dict[str, dict[str, Any]], expected: dict[str, str], release: str, tarball: Path
) -> None:
    """The tarball holds the built files, byte for byte, and a toa.ko."""
    for name, digest in expected.items():
        found = files.get(name)
        if found is None:
            raise EnvironmentFailure(f"{tarball} lacks {name}", f"check 'make {PACK_TARGET}' in the tree")
        if found["sha256"] != digest:
            raise UserError(
                f"{tarball}: {name} is not the file the build recorded (the tree was rebuilt since)",
                "run 'invoke build' again, then 'invoke bundle'",
            )
    prefix = f"./lib/modules/{release}/"
    if not any(n.startswith(prefix) and n.endswith("/toa.ko") for n in files):
        raise EnvironmentFailure(
            f"{tarball} has no toa.ko under lib/modules/{release}",
            "check that the build made net/toa/toa.ko (CONFIG_TOA=m) and build again",
        )


def pack_tree(tree: Path, build: dict[str, Any], log: Path, console: Console) -> Path:
    """``make targz-pkg`` in the built tree (with the build's make arguments); the tarball."""
    metadata = read_metadata(Path(str(build.get("metadata") or "")))
    args = kbuild.compile_args(int(metadata.get("jobs") or 1), bool(metadata.get("ccache")))
    with console.progress(total=None, desc=f"make {PACK_TARGET}", unit="line") as bar:
        run = kbuild.run_make(tree, [*args, PACK_TARGET], log, on_line=lambda _line: bar.update(1))
    kbuild.checked(f"make {PACK_TARGET}", run, log, f"read {log}; does the tree have scripts/package/?")
    tarball = tree / f"linux-{build['release']}.tar.gz"
    if not tarball.is_file():
        raise EnvironmentFailure(
            f"make {PACK_TARGET} did not write {tarball}", f"read {log} (the tree's scripts/package/buildtar)"
        )
    return tarball


def make_bundle(
    settings: Settings, console: Console | None = None, force: bool = False
) -> tuple[Bundle, bool]:
    """The bundle of the recorded build: made now, or the one made before. (bundle, made now)"""
    console = console or Console()
    workdir = Workdir(Path(settings.workdir))
    build = recorded_build(workdir)
    directory = bundle_dir(workdir, str(build["build_id"]))
    if (directory / BUNDLE_JSON).exists() and not force:
        return load_bundle(directory), False
    release, tree = str(build["release"]), Path(str(build["tree"]))
    expected = {name: sha256_of(path) for name, path in built_files(build).items()}
    arch = arch_of_config(tree / ".config")
    log = workdir.logs / f"bundle-{build['build_id']}.log"
    console.say(f"bundle: make {PACK_TARGET} in {tree} (log {log})")
    packed = pack_tree(tree, build, log, console)
    files = tarball_members(packed, release)
    check_members(files, expected, release, packed)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    target = directory / packed.name
    partial = directory / f".{packed.name}.partial"
    shutil.copyfile(packed, partial)
    partial.replace(target)
    metadata = read_metadata(Path(str(build.get("metadata") or "")))
    bundle = Bundle(
        directory=directory,
        release=release,
        build_id=str(build["build_id"]),
        arch=arch,
        sha256=sha256_of(target),
        size=target.stat().st_size,
        tarball_name=target.name,
        files=files,
        build={"manifest": build, "metadata": metadata},
        created_at=now_iso(),
    )
    atomic_write_json(bundle.record, bundle.as_dict())
    console.say(f"bundle: {target} sha256 {bundle.sha256}")
    return bundle, True


# --- the bundle's files on this machine (for the boot steps' checks) --------------------------------


def unpacked(bundle: Bundle) -> Path:
    """The tarball unpacked once beside it (``tree/``): regular files and directories only.

    The boot steps compare what a host has with these files (the same bytes the
    host received), so they never need the build tree again.
    """
    with UNPACK_LOCK:  # the hosts of a wave ask at once
        return unpack_locally(bundle)


def unpack_locally(bundle: Bundle) -> Path:
    tree = bundle.directory / "tree"
    if (tree / ".config").is_file():
        return tree
    partial = bundle.directory / ".tree.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    with tarfile.open(bundle.tarball, "r:gz") as archive:
        for info in archive:
            problem = member_problem(info.name, info, bundle.release)
            if problem:
                raise EnvironmentFailure(f"{bundle.tarball}: member {info.name} {problem}")
            target = partial / info.name
            if info.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif info.isreg():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(info)
                assert source is not None
                with open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                target.chmod(info.mode & 0o755)
    shutil.copyfile(partial / "boot" / f"config-{bundle.release}", partial / ".config")
    if tree.exists():
        shutil.rmtree(tree)
    partial.rename(tree)
    return tree


def build_section(bundle: Bundle) -> dict[str, Any]:
    """A manifest ``build`` section naming the bundle's own files (a host's work directory holds it)."""
    tree = unpacked(bundle)
    toa = bundle.toa_module()
    if toa is None:
        raise EnvironmentFailure(f"the bundle {bundle.id} has no toa.ko", "make the bundle again")
    return {
        "build_id": bundle.build_id,
        "status": "ok",
        "release": bundle.release,
        "tree": str(tree),
        "bzimage": str(tree / bundle.vmlinuz.lstrip("/")),
        "system_map": str(tree / bundle.system_map.lstrip("/")),
        "toa_ko": str(tree / toa.lstrip("/")),
        "metadata": str(bundle.record),
        "bundle": bundle.sha256,
    }
