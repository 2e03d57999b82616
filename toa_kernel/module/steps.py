"""Kernels 3.0 and later: build, install and roll back the out-of-tree TOA module.

``build_module``: the module's source (a branch tarball of the vendor's
repository, fetched and unpacked with the same code as the kernel source, or a
local ``--src`` checkout) is copied into ``WORKDIR/builds/module-R/`` and built
there with Kbuild against ``/lib/modules/R/build``, after the TCP option kind
is set in its ``toa.h`` (``optioncode``) and the compatibility patches those headers
call for are applied (``compat``); the checked ``.ko`` is recorded,
with the patches applied, in the manifest (section ``module``, key ``builds``).
``install_module`` installs a recorded build (``modinstall``);
``rollback_module`` undoes it (``modrollback``).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.core.fileops import disk_error, remove_tree
from toa_kernel.core.plan import Change, Plan
from toa_kernel.core.settings import Settings, check_branch, check_release, check_url, sha256_value
from toa_kernel.core.state import Workdir, now_iso
from toa_kernel.kernel.modinfo import ModuleInfo, check_vermagic, read_module_info
from toa_kernel.module.boot import boot_files
from toa_kernel.module.build import (
    KbuildFacts,
    check_module_era,
    check_prereqs,
    find_module_source,
    gather_kbuild_facts,
    kbuild,
    kbuild_command,
)
from toa_kernel.module.compat import HeaderTree, PatchChoice, apply_choices, choose_patches, header_tree
from toa_kernel.module.distro import Distro, detect_distro, headers_package, install_command
from toa_kernel.module.install import (
    SECTION,
    Recorder,
    confirm_loaded,
    gather_install_facts,
    plan_install,
    running_release,
    stale_load_warning,
)
from toa_kernel.module.optioncode import built_kind, check_built_kind, preview_change, set_option_code
from toa_kernel.module.rollback import rollback_module as undo_install
from toa_kernel.source import archive
from toa_kernel.source.download import Downloader, file_name_of, sha256_of
from toa_kernel.system.api import System
from toa_kernel.system.local import LocalSystem
from toa_kernel.system.opener import open_system
from toa_kernel.system.rootfs import Root

NAT64_BRANCH = "IPv6"
PRIMARY_MODULE = "toa"


@dataclass(frozen=True)
class SourceRequest:
    """Where the module's source comes from (at most one of ``src``/``tarball``)."""

    src: Path | None = None
    tarball: Path | None = None
    url: str | None = None
    sha256: str = ""
    branch: str | None = None
    nat64: bool = False

    def chosen_branch(self, settings: Settings) -> str:
        """The branch, checked by git's ref-name rules (``--branch`` or ``toa.module_branch``)."""
        if self.nat64:
            if self.branch and self.branch != NAT64_BRANCH:
                raise UserError(
                    f"--nat64 needs branch {NAT64_BRANCH}, but --branch says {self.branch}",
                    "drop one of the two flags",
                )
            return NAT64_BRANCH
        if self.branch is not None:
            return check_branch(self.branch, "--branch")
        return check_branch(settings.module_branch, "toa.module_branch")

    def chosen_url(self, settings: Settings) -> str:
        template = self.url or settings.module_url
        try:
            # A branch with '/' names nested refs: kept as path separators, all else quoted.
            url = template.format(branch=quote(self.chosen_branch(settings), safe="/"))
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(
                f"module URL {template!r} is not a valid template ({exc})",
                "use {branch} as the only placeholder, or none",
            ) from exc
        check_url(url, "--url" if self.url else "toa.module_url")
        return url


def branch_file_part(branch: str) -> str:
    """A branch as one file-name component (``feature/x`` -> ``feature%2Fx``)."""
    return quote(branch, safe="")


def release_for_build(system: System, release: str | None) -> str:
    """``--release``, else the system's running kernel."""
    chosen = release or running_release(system)
    if not chosen:
        raise UserError(
            f"cannot tell which kernel to build for: {system.label} has no /proc/sys/kernel/osrelease",
            "pass --release R (the 'uname -r' of the target kernel)",
        )
    check_release_name(chosen)
    return chosen


def check_release_name(release: str) -> None:
    check_release(release)
    check_module_era(release)


def tree_digest(directory: Path) -> str:
    """sha256 over the names and contents of a (small) source tree."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


# --- prerequisites ------------------------------------------------------------


def prerequisite_packages(facts: KbuildFacts) -> list[str]:
    packages = list(facts.missing_tools)
    if facts.kdir is None:
        package = headers_package(facts.distro, facts.release)
        if package:
            packages.append(package)
    return packages


def install_prerequisites(system: System, facts: KbuildFacts, console: Console, dry_run: bool) -> bool:
    """Run the system's package manager for what is missing; True when it ran (or would)."""
    packages = prerequisite_packages(facts)
    if not packages:
        return False
    if not system.is_live:
        raise UserError(
            "--install-deps runs the system's package manager, so it works only with --root /",
            f"install {', '.join(packages)} into {system.root} yourself (chroot), then build again",
        )
    command = install_command(facts.distro, packages)
    if command is None:
        check_prereqs(facts)  # raises with the distribution's own advice
        return False
    plan = Plan("build-module")
    plan.add(
        Change(
            f"install {', '.join(packages)}", lambda: run_package_manager(system, command), command=command
        )
    )
    plan.apply(dry_run, echo=console.say)
    return True


def run_package_manager(system: System, command: list[str]) -> None:
    if isinstance(system, LocalSystem):  # its output belongs on the operator's screen
        try:
            code = subprocess.run(command, check=False).returncode
        except FileNotFoundError as exc:
            raise EnvironmentFailure(f"{command[0]} is not on PATH", "install the packages by hand") from exc
        output = ""
    else:
        result = system.run(command, timeout=3600)
        code, output = result.returncode, (result.err or result.out).strip()[-2000:]
    if code != 0:
        raise EnvironmentFailure(
            f"'{shlex.join(command)}' failed on {system.label} (exit {code})"
            + (f": {output}" if output else ""),
            "read its output; fix the package repositories and run again",
        )


# --- source ---------------------------------------------------------------------


def fetch_source(
    settings: Settings, workdir: Workdir, request: SourceRequest, console: Console, force: bool
) -> tuple[Path, dict[str, Any]]:
    """Download (or copy) and unpack the module tarball; return the tree and its origin.

    A tarball downloaded before from the same URL is reused (its sha256 checked
    against the record and the pin); ``--tarball`` is always copied afresh.
    """
    branch, url, dest = download_target(settings, workdir, request)
    digest = reusable_download(workdir, url, dest, request.sha256) if not (force or request.tarball) else None
    if digest is None:
        console.say(f"build-module: fetching {url}")
        result = Downloader.from_settings(settings, console).fetch(
            url, dest, sha256=request.sha256, check=archive.identify
        )
        digest = result.sha256
    else:
        console.say(f"build-module: using {dest} (downloaded before; --force fetches again)")
    origin = {"url": url, "branch": branch, "tarball": str(dest), "sha256": digest}
    section = workdir.section(SECTION)
    section["download"] = origin
    workdir.update_manifest(SECTION, section)
    try:
        unpacked = archive.unpack(dest, workdir.src / f"module-{branch_file_part(branch)}", console)
    except (archive.Unsafe, archive.Damaged) as exc:
        # Neither kept nor recorded: a later run must not reuse it.
        section = workdir.section(SECTION)
        section.pop("download", None)
        workdir.update_manifest(SECTION, section)
        remove_tree(dest)
        raise type(exc)(f"{dest.name}: {exc.message}; the file was removed", exc.fix) from None
    return unpacked.tree, origin


def download_target(settings: Settings, workdir: Workdir, request: SourceRequest) -> tuple[str, str, Path]:
    """The branch, the URL and the file in the work directory the tarball is downloaded to."""
    branch = request.chosen_branch(settings)
    url = request.tarball.resolve().as_uri() if request.tarball else request.chosen_url(settings)
    name = f"module-{branch_file_part(branch)}-{file_name_of(url, 'module.tar.gz')}"
    return branch, url, workdir.downloads / name


def reusable_download(workdir: Workdir, url: str, dest: Path, pin: str) -> str | None:
    """The sha256 of an earlier download of ``url`` still intact at ``dest`` (else None)."""
    recorded = workdir.section(SECTION).get("download") or {}
    if recorded.get("url") != url or recorded.get("tarball") != str(dest) or not dest.is_file():
        return None
    digest = sha256_of(dest)
    if digest != recorded.get("sha256"):
        return None
    if pin and digest != pin:
        raise UserError(
            f"{dest} (from {url}) has sha256 {digest}, but the pin says {pin}",
            "check the pin, or pass --force to download it again",
        )
    return digest


def stage_source(source: Path, build_dir: Path) -> Path:
    """Copy the module's directory into the build directory (the checkout stays clean)."""
    moddir = find_module_source(source)
    staged = build_dir / "src"
    try:
        if staged.exists():
            shutil.rmtree(staged)
        build_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(moddir, staged, symlinks=True)
    except OSError as exc:
        raise disk_error(exc, staged) from exc
    return staged


def primary_module(infos: list[ModuleInfo]) -> ModuleInfo:
    """``toa`` when the build made it, else the only module built."""
    for info in infos:
        if info.name == PRIMARY_MODULE:
            return info
    if len(infos) == 1:
        return infos[0]
    names = ", ".join(info.name for info in infos)
    raise UserError(f"the build made several modules ({names}) and none is named {PRIMARY_MODULE}")


# --- build ----------------------------------------------------------------------


def build_module(
    settings: Settings,
    request: SourceRequest,
    console: Console,
    *,
    release: str | None = None,
    install_deps: bool = False,
    force: bool = False,
    dry_run: bool = False,
    system: System | None = None,
) -> dict[str, Any]:
    """Fetch, stage and build the module for ``release``; return the build record.

    With a server over SSH (``system``, ``--host``) the module is compiled there, against its
    kernel headers with its gcc (``module.remotebuild``); else here, under ``--root``.
    """
    if request.src and request.tarball:
        raise UserError("--src and --tarball both name a source", "pass only one of them")
    if request.sha256:
        sha256_value(request.sha256, "--sha256")
    if system is None or not system.host:
        system = LocalSystem(Root.of(settings.root))
    distro = detect_distro(system)
    release = release_for_build(system, release)
    builder = kbuild_for(system, release, distro)
    facts = builder.facts
    installs = install_deps and install_prerequisites(system, facts, console, dry_run)
    if installs and not dry_run:
        facts = builder.refresh()
    if not (installs and dry_run):
        check_prereqs(facts)
    workdir = Workdir(settings.workdir)
    if dry_run:
        return dry_build(settings, request, facts, workdir, console)
    workdir.ensure()
    if request.src:
        source, origin = Path(request.src).expanduser().resolve(), {"src": str(Path(request.src).resolve())}
    else:
        source, origin = fetch_source(settings, workdir, request, console, force)
    build_dir = workdir.builds / f"module-{release}"
    staged = stage_source(source, build_dir)
    option_code = set_option_code(staged, settings.option_code, console)
    assert facts.kdir is not None
    version, choices = choose_patches(settings.input_dir("patches"), staged, builder.headers())
    digest = build_digest(tree_digest(staged), choices)
    previous = builds(workdir).get(release)
    if previous and not force and previous.get("source_digest") == digest and reusable(previous, release):
        console.say(f"build-module: {previous['ko']} is up to date for {release} (--force rebuilds)")
        return previous
    report_patches(version, choices, console)
    apply_choices(staged, choices)
    log_path = workdir.logs / f"module-{release}.log"
    infos = builder.compile(staged, log_path, settings.jobs, console)
    module = primary_module(infos)
    check_built_kind(module, settings.option_code)
    ko = build_dir / module.path.name
    try:
        shutil.copy2(module.path, ko)
    except OSError as exc:
        raise disk_error(exc, ko) from exc
    record = {
        "release": release,
        "name": module.name,
        "ko": str(ko),
        "vermagic": module.vermagic.strip(),
        "log": str(log_path),
        "source": origin,
        "source_digest": digest,
        "module_version": version,
        "option_code": option_code,
        "recorded_option_code": built_kind(module),
        "patches": [choice.as_dict() for choice in choices],
        "distro": distro.label,
        "build_host": builder.describe(),
        "built": now_iso(),
    }
    save_build(workdir, record)
    return record


class LocalKbuild:
    """The module compiled here, against the headers under the root."""

    def __init__(self, system: LocalSystem, release: str, distro: Distro) -> None:
        self.root, self.release, self.distro = system.fs, release, distro
        self.facts = gather_kbuild_facts(self.root, release, distro)

    def refresh(self) -> KbuildFacts:
        self.facts = gather_kbuild_facts(self.root, self.release, self.distro)
        return self.facts

    def headers(self) -> HeaderTree:
        assert self.facts.kdir is not None
        return header_tree(self.root, self.release, self.facts.kdir)

    def compile(self, staged: Path, log: Path, jobs: int, console: Console) -> list[ModuleInfo]:
        return kbuild(self.facts, staged, log, jobs if jobs > 0 else (os.cpu_count() or 1), console)

    def describe(self) -> dict[str, Any] | None:
        return None


def kbuild_for(system: System, release: str, distro: Distro) -> Any:
    """Where the module is compiled: here, or on the server (``RemoteKbuild``)."""
    if isinstance(system, LocalSystem):
        return LocalKbuild(system, release, distro)
    from toa_kernel.module.remotebuild import RemoteKbuild

    return RemoteKbuild(system, release, distro)


def build_digest(source_digest: str, choices: list[PatchChoice]) -> str:
    """The source's digest combined with the patches applied to it (a changed patch rebuilds)."""
    digest = hashlib.sha256(source_digest.encode())
    for choice in choices:
        if choice.applies:
            digest.update(choice.patch.name.encode() + b"\0" + choice.patch.path.read_bytes())
    return digest.hexdigest()


def report_patches(version: str | None, choices: list[PatchChoice], console: Console) -> None:
    """Say which compatibility patches the headers call for, and why."""
    if version is None:
        return
    if not choices:
        console.say(f"build-module: no compatibility patches for module version {version}")
    for choice in choices:
        verdict = "apply" if choice.applies else "skip"
        console.say(f"build-module: {verdict} {choice.patch.name}: {choice.patch.subject} ({choice.why})")


def dry_build(
    settings: Settings, request: SourceRequest, facts: KbuildFacts, workdir: Workdir, console: Console
) -> dict[str, Any]:
    """Print what a build would do; change nothing."""
    plan = Plan("build-module")
    if request.src:
        source = str(find_module_source(Path(request.src)))
    else:
        source = str(request.tarball) if request.tarball else request.chosen_url(settings)
        plan.add(Change(f"fetch and unpack {source} into {workdir.src}", lambda: None))
    moddir = workdir.builds / f"module-{facts.release}" / "src"
    plan.add(Change(f"copy the module source into {moddir}", lambda: None))
    plan.add(option_code_preview(settings, request, workdir))
    command = kbuild_command(facts.kdir or facts.build_link, moddir, settings.effective_jobs)
    plan.add(Change("build it", lambda: None, command=command))
    plan.apply(True, echo=console.say)
    return {"release": facts.release, "source": source, "option_code": settings.option_code, "dry_run": True}


def option_code_preview(settings: Settings, request: SourceRequest, workdir: Workdir) -> Change:
    """The edit of toa.h a build would make, as a diff when the source is on this machine.

    A tarball (``--tarball``, or the one an earlier run downloaded) is unpacked into a
    temporary directory that is removed again; a URL not yet downloaded is not fetched."""
    code = settings.option_code
    if request.src:
        return preview_change(find_module_source(Path(request.src)), code)
    tarball: Path | None = request.tarball
    if tarball is None:
        _, url, dest = download_target(settings, workdir, request)
        tarball = dest if reusable_download(workdir, url, dest, request.sha256) else None
    if tarball is None:
        return Change(
            f"set TCPOPT_TOA to {code} in toa.h of the downloaded source "
            "(the diff needs the source here: pass --tarball, or run without --dry-run)",
            lambda: None,
        )
    with tempfile.TemporaryDirectory(prefix="toa-dry-") as temp:
        unpacked = archive.unpack(tarball, Path(temp), Console(quiet=True))
        return preview_change(find_module_source(unpacked.tree), code)


def reusable(record: dict[str, Any], release: str) -> bool:
    try:
        check_vermagic(read_module_info(Path(record["ko"])), release)
    except (UserError, KeyError):
        return False
    return True


def builds(workdir: Workdir) -> dict[str, Any]:
    value = workdir.section(SECTION).get("builds") or {}
    return value if isinstance(value, dict) else {}


def save_build(workdir: Workdir, record: dict[str, Any]) -> None:
    section = workdir.section(SECTION)
    section.setdefault("builds", {})[record["release"]] = record
    workdir.update_manifest(SECTION, section)


# --- install and rollback -----------------------------------------------------------


def release_for_install(system: System, workdir: Workdir, release: str | None, ko: Path | None) -> str:
    """``--release``; else the running kernel when it has a build; else the only build."""
    if release:
        return release
    if ko is not None:
        found = read_module_info(ko).release
        if found:
            return found
    recorded = builds(workdir)
    running = running_release(system)
    if running and (running in recorded or not recorded):
        return running
    if len(recorded) == 1:
        return next(iter(recorded))
    choices = ", ".join(sorted(recorded)) or "none"
    raise UserError(
        f"cannot tell which kernel to install the module for (builds: {choices})",
        "pass --release R",
    )


def module_file(workdir: Workdir, release: str, ko: Path | None) -> Path:
    if ko is not None:
        return Path(ko).expanduser().resolve()
    record = builds(workdir).get(release)
    if not record:
        raise UserError(
            f"no module was built for {release} in {workdir.path}",
            f"run 'invoke build-module --release {release}' first (or pass --ko PATH)",
        )
    return Path(record["ko"])


STYLE_NAMES = ("auto", "modules", "systemd", "none")


def install_module(
    settings: Settings,
    console: Console,
    *,
    release: str | None = None,
    ko: Path | None = None,
    startup: str = "auto",
    dry_run: bool = False,
    system: System | None = None,
) -> dict[str, Any]:
    """Install the built module on the system (``--root``, ``--host``); return what was done."""
    if startup not in STYLE_NAMES:
        raise UserError(
            f"--startup {startup!r} is not a known startup style", f"use one of: {', '.join(STYLE_NAMES)}"
        )
    if system is None:
        with open_system(settings) as opened:
            return install_on(opened, settings, console, release, ko, startup, dry_run)
    return install_on(system, settings, console, release, ko, startup, dry_run)


def install_on(
    system: System,
    settings: Settings,
    console: Console,
    release: str | None,
    ko: Path | None,
    startup: str,
    dry_run: bool,
) -> dict[str, Any]:
    workdir = Workdir(settings.workdir)
    distro = detect_distro(system)
    release = release_for_install(system, workdir, release, ko)
    check_release_name(release)
    facts = gather_install_facts(system, release, module_file(workdir, release, ko), distro)
    if startup != "auto":
        facts.style = startup
        facts.boot = boot_files(facts.name, startup)
    if facts.style == "none":
        console.warn(boot_advice(distro, facts.name))
    warning = stale_load_warning(facts)
    if warning:
        console.warn(warning)
    recorder = Recorder(workdir, system)
    recorder.load()  # refuses a work directory that records an install on another system
    plan = plan_install(facts, recorder)
    if not dry_run:
        workdir.ensure()
    done = plan.apply(dry_run, echo=console.say)
    loaded = None if dry_run else confirm_loaded(facts, console)
    return {
        "release": release,
        "module": facts.name,
        "vermagic": facts.module.vermagic.strip(),
        "root": system.root,
        "host": system.host,
        "distribution": distro.label,
        "startup": facts.style,
        "boot_files": [f.path for f in facts.boot],
        "loaded": loaded,
        "changes": done,
        "dry_run": dry_run,
    }


def boot_advice(distro: Distro, name: str) -> str:
    return (
        f"{distro.label} uses neither /etc/sysconfig/modules nor systemd: {name} is NOT loaded at boot; "
        f"add 'modprobe {name}' to the boot scripts "
        "(SLES 11: MODULES_LOADED_ON_BOOT in /etc/sysconfig/kernel)"
    )


def rollback_module(
    settings: Settings, console: Console, *, dry_run: bool = False, system: System | None = None
) -> list[str]:
    """Remove what install-module added on the system (``--root``, ``--host``)."""
    if system is None:
        with open_system(settings) as opened:
            return undo_install(opened, Recorder(Workdir(settings.workdir), opened), console, dry_run)
    return undo_install(system, Recorder(Workdir(settings.workdir), system), console, dry_run)
