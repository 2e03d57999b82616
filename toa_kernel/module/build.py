"""Build an out-of-tree kernel module with Kbuild and check what it produced.

``make -C /lib/modules/R/build M=DIR modules`` compiles the module in ``DIR``
against the kernel development files of release ``R``. Facts first (the headers'
directory and the release they belong to, the tools on PATH), then the build with
its output in a log file, then the result: every ``.ko`` must be an ELF
relocatable whose vermagic names ``R``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToaError, ToolMissing, UserError
from toa_kernel.core.fileops import disk_error
from toa_kernel.core.layout import MODULES_DIR
from toa_kernel.kernel.modinfo import ModuleInfo, check_vermagic, read_module_info
from toa_kernel.module.distro import Distro, headers_command, headers_package, missing_fix
from toa_kernel.system.rootfs import Root

BUILD_TOOLS = ("make", "gcc")
# elb-toa's Makefile says ``obj-$(CONFIG_TOA) += toa.o`` on branch master: its own
# ``make`` passes CONFIG_TOA=m, and so must we. Other modules ignore the variable.
MAKE_VARIABLES = ("CONFIG_TOA=m",)
MAKEFILES = ("Makefile", "Kbuild", "makefile", "GNUmakefile")
UTSRELEASE_HEADERS = ("include/generated/utsrelease.h", "include/linux/utsrelease.h")
RETPOLINE_RE = re.compile(
    r"CONFIG_RETPOLINE=y,? but not supported by the compiler|non-retpoline compiler", re.IGNORECASE
)
ERROR_RE = re.compile(r"\berror:", re.IGNORECASE)
MAKE_STOP_RE = re.compile(r"\*\*\*.*")
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class KbuildFacts:
    """What a module build needs, as found on this machine and under the root."""

    release: str
    distro: Distro
    build_link: Path
    kdir: Path | None
    headers_release: str | None
    missing_tools: list[str] = field(default_factory=list)


def kernel_version(release: str) -> tuple[int, int] | None:
    """``3.10.0-1160.el7.x86_64`` -> (3, 10); None when it does not start with digits."""
    match = re.match(r"^(\d+)\.(\d+)", release)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_module_era(release: str) -> None:
    """The out-of-tree module is for kernels 3.0 and later; 2.6.32 needs the TOA kernel."""
    version = kernel_version(release)
    if version is not None and version < (3, 0):
        raise UserError(
            f"kernel {release} is older than 3.0: the out-of-tree TOA module does not support it",
            "on CentOS/RHEL 6 (2.6.32) build the TOA kernel instead: invoke fetch build install-kernel",
        )


def kernel_build_dir(root: Root, release: str) -> Path:
    """``ROOT/lib/modules/R/build`` with its symlink followed inside the root."""
    return root.resolve(f"{MODULES_DIR}/{release}/build")


def headers_release(kdir: Path) -> str | None:
    """The release a headers tree was configured for (``UTS_RELEASE``), if it says."""
    for name in UTSRELEASE_HEADERS:
        path = kdir / name
        if path.is_file():
            match = re.search(r'#define\s+UTS_RELEASE\s+"([^"]+)"', path.read_text(errors="replace"))
            if match:
                return match.group(1)
    return None


def gather_kbuild_facts(root: Root, release: str, distro: Distro) -> KbuildFacts:
    link = root.path(f"{MODULES_DIR}/{release}/build")
    kdir = kernel_build_dir(root, release)
    usable = kdir.is_dir() and (kdir / "Makefile").is_file()
    return KbuildFacts(
        release=release,
        distro=distro,
        build_link=link,
        kdir=kdir if usable else None,
        headers_release=headers_release(kdir) if usable else None,
        missing_tools=[tool for tool in BUILD_TOOLS if shutil.which(tool) is None],
    )


def check_prereqs(facts: KbuildFacts) -> None:
    """Raise with the exact install command when a tool or the headers are missing."""
    if facts.missing_tools:
        tool = facts.missing_tools[0]
        raise ToolMissing(tool, missing_fix(facts.distro, list(facts.missing_tools), "gcc and make"))
    release = facts.release
    if facts.kdir is None:
        package = headers_package(facts.distro, release)
        what = f"package {package}" if package else f"the kernel development files of {release}"
        raise EnvironmentFailure(
            f"the kernel development files for {release} are not installed "
            f"({MODULES_DIR}/{release}/build is missing or has no Makefile; {facts.distro.label})",
            missing_fix(facts.distro, [package] if package else [], what),
        )
    if facts.headers_release and facts.headers_release != release:
        raise UserError(
            f"{MODULES_DIR}/{release}/build holds the development files of {facts.headers_release}, "
            f"not {release}: a module built there would carry vermagic {facts.headers_release} "
            "and the kernel would refuse it",
            f"point {facts.build_link} at the headers of {release} "
            f"(install: {install_hint(facts.distro, release)})",
        )


def install_hint(distro: Distro, release: str) -> str:
    command = headers_command(distro, release)
    return shlex.join(command) if command else f"the kernel development files of {release}"


def find_module_source(src: Path) -> Path:
    """The directory holding the module's Makefile: ``src`` itself or ``src/src``.

    elb-toa keeps its Makefile in ``src/``; a tarball unpacks into one top directory.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"module source {src} is not a directory", "pass --src with the module's checkout")
    candidates = [src, src / "src"]
    children = [p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(children) == 1:
        candidates += [children[0], children[0] / "src"]
    for candidate in candidates:
        if any((candidate / name).is_file() for name in MAKEFILES):
            return candidate
    raise UserError(
        f"module source {src} has no Makefile (looked in {', '.join(str(c) for c in candidates)})",
        "pass --src with the directory holding the module's Makefile and .c files "
        "(for elb-toa that is the src/ folder)",
    )


def kbuild_command(kdir: Path, moddir: Path, jobs: int) -> list[str]:
    """The Kbuild command line for an external module."""
    return ["make", f"-j{max(1, jobs)}", "-C", str(kdir), f"M={moddir}", *MAKE_VARIABLES, "modules"]


def run_kbuild(command: list[str], log_path: Path, console: Console) -> int:
    """Run ``command``, its output into ``log_path`` (and a line count on the bar)."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log, console.progress(None, "kbuild", unit="line") as bar:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env=env,
            )
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                bar.update(1)
            return process.wait()
    except OSError as exc:
        raise disk_error(exc, log_path) from exc


def first_error_line(log_text: str) -> str | None:
    """The compiler's first ``error:`` line, else make's first ``***`` line."""
    for line in log_text.splitlines():
        if ERROR_RE.search(line):
            return line.strip()
    for line in log_text.splitlines():
        match = MAKE_STOP_RE.search(line)
        if match:
            return line.strip()
    return None


def classify_failure(log_text: str, log_path: Path, release: str) -> ToaError:
    """Turn a failed Kbuild log into an error a person can act on."""
    if RETPOLINE_RE.search(log_text):
        return EnvironmentFailure(
            f"the kernel {release} was built with retpoline (CONFIG_RETPOLINE=y) but this gcc "
            "does not support it: the compiler is too old for these kernel headers",
            "upgrade gcc to the version the kernel was built with (CentOS 7: 'yum update gcc', "
            f"at least gcc 4.8.5-28), then build again; log: {log_path}",
        )
    line = first_error_line(log_text)
    if line is None:
        tail = "\n".join(log_text.splitlines()[-LOG_TAIL_LINES:])
        return UserError(f"the module build failed; last lines of the log:\n{tail}", f"read {log_path}")
    return UserError(
        f"the module does not compile against {release}: {line}",
        f"read the full log {log_path}; a module that predates this kernel's API needs a newer "
        "version of its source (elb-toa: try the other branch with --branch or --nat64)",
    )


def built_modules(moddir: Path) -> list[Path]:
    """The ``.ko`` files Kbuild left in the module directory."""
    return sorted(p for p in moddir.rglob("*.ko") if p.is_file())


def check_built(moddir: Path, release: str, log_path: Path) -> list[ModuleInfo]:
    """Every built module is an ELF relocatable for ``release``; raise otherwise."""
    modules = built_modules(moddir)
    if not modules:
        raise UserError(
            f"the build finished but produced no .ko in {moddir}",
            f"check that the Makefile sets obj-m (or obj-$(CONFIG_TOA)); log: {log_path}",
        )
    infos = [read_module_info(path) for path in modules]
    for info in infos:
        check_vermagic(info, release)
    return infos


def kbuild(facts: KbuildFacts, moddir: Path, log_path: Path, jobs: int, console: Console) -> list[ModuleInfo]:
    """Build the module in ``moddir`` against ``facts.kdir``; return the checked modules."""
    check_prereqs(facts)
    assert facts.kdir is not None
    if any(ch.isspace() for ch in str(moddir)):
        raise UserError(
            f"Kbuild cannot build in {moddir}: the path has white space",
            "use a work directory whose path has no spaces (--workdir)",
        )
    for stale in built_modules(moddir):
        stale.unlink()
    command = kbuild_command(facts.kdir, moddir, jobs)
    console.say(f"build-module: $ {shlex.join(command)}")
    console.say(f"build-module: log {log_path}")
    code = run_kbuild(command, log_path, console)
    if code != 0:
        raise classify_failure(log_path.read_text(errors="replace"), log_path, facts.release)
    return check_built(moddir, facts.release, log_path)
