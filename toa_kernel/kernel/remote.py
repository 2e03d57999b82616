"""``invoke build --host BUILDHOST``: the prepared tree compiled on another machine, with its compiler.

The tree is prepared where the tool runs (patch, ``.config``, EXTRAVERSION: the
steps of ``invoke build``); then, on the build host (a ``System`` over SSH,
under ``--root``, ``/`` by default):

- ship: the tree goes to ``/var/tmp/toa-kernel-build/TREE`` as a tar stream. What
  was shipped (size and modification time of every file) is kept in the work
  directory (``builds/remote-HOST.json``) and matched by a token in the shipped
  directory: a re-run sends only the files that changed since, and removes there
  the ones removed here. Objects built here never go (``*.o``, ``*.cmd``, ``*.ko``
  and any ELF file, such as kconfig's helper programs, made for this machine's
  C library): the build host makes its own.
- compile: ``make -jN`` there (N: its processors when ``jobs`` is 0), every line
  streamed back into the build log as it comes, with the progress bar.
- fetch: ``make modules_install`` there into a staging directory; bzImage,
  System.map, toa.ko, .config and ``lib/modules/R`` come back into the build's
  directory (``WORKDIR/builds/ID/remote/``), where the artifacts step checks them
  like a local build's and install-kernel takes them from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shlex
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, ToolMissing
from toa_kernel.core.fileops import atomic_write_json
from toa_kernel.core.layout import BZIMAGE, TOA_MODULE_OBJECT
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.kernel import kbuild, toolchain
from toa_kernel.system.api import NOT_FOUND_STATUS, System

SHIP_DIR = "/var/tmp/toa-kernel-build"
TOKEN_FILE = ".toa-kernel-shipped"
SKIP_SUFFIXES = (".o", ".ko", ".cmd", ".a", ".so", ".mod.c")
SKIP_DIRS = {".git"}
ELF_MAGIC = b"\x7fELF"
NEEDED_TOOLS = ("make", "gcc", "perl", "tar")
BUILD_TOOLS = ("gcc", "make", "ld")


def shippable(path: Path, name: str) -> bool:
    """False for what a build makes (objects, ELF programs): the build host makes its own."""
    if name.endswith(SKIP_SUFFIXES):
        return False
    if path.is_symlink():
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) != ELF_MAGIC
    except OSError:
        return False


def scan(tree: Path) -> dict[str, list[Any]]:
    """Every shippable file and link of the tree: relative path -> [size, mtime_ns] (or the link's text)."""
    found: dict[str, list[Any]] = {}
    for directory, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not Path(directory, d).is_symlink()]
        links = [d for d in os.listdir(directory) if Path(directory, d).is_symlink() and d not in files]
        for name in [*files, *links]:
            path = Path(directory, name)
            relative = str(path.relative_to(tree))
            if path.is_symlink():
                found[relative] = ["link", os.readlink(path)]
            elif path.is_file() and shippable(path, name):
                st = path.stat()
                found[relative] = [st.st_size, st.st_mtime_ns]
    return found


@dataclass
class ShipReport:
    files: int = 0
    bytes: int = 0
    removed: int = 0
    full: bool = False

    def describe(self) -> str:
        what = "the whole tree" if self.full else "changed files"
        return f"shipped {what}: {self.files} files, {self.bytes / 1e6:.1f} MB; removed {self.removed}"


@dataclass
class RemoteBuild:
    """A build host and the tree compiled there."""

    system: System
    tree: Path
    record_path: Path
    gcc: str | None = None
    jobs: int | None = None
    shipped: ShipReport = field(default_factory=ShipReport)

    @property
    def directory(self) -> str:
        """The tree's directory on the build host (a system path)."""
        return f"{SHIP_DIR}/{self.tree.name}"

    @property
    def host_directory(self) -> str:
        return self.system.host_path(self.directory)

    def describe(self) -> dict[str, Any]:
        return {
            "host": self.system.host,
            "directory": self.host_directory,
            "gcc": self.gcc,
            "jobs": self.jobs,
            "shipped": self.shipped.describe(),
        }

    # --- checks --------------------------------------------------------------------

    def preflight(self, min_free_gib: float) -> None:
        """The build host has the tools and the disk a kernel build needs."""
        answers = {tool: self.system.run([tool, "--version"]) for tool in NEEDED_TOOLS}
        missing = [tool for tool, answer in answers.items() if answer.returncode == NOT_FOUND_STATUS]
        if missing:
            raise ToolMissing(
                missing[0], f"on the build host {self.system.host}: yum install {' '.join(missing)}"
            )
        self.system.makedirs(SHIP_DIR)
        free = self.system.free_bytes(SHIP_DIR)
        if free < min_free_gib * 1024**3:
            raise EnvironmentFailure(
                f"only {free / 1024**3:.1f} GiB free under {self.system.host_path(SHIP_DIR)} on "
                f"{self.system.host}; the build needs {min_free_gib:g} GiB",
                "free space there, or lower toa.min_free_gib",
            )
        self.gcc = first_line(answers["gcc"].out)

    # --- ship ----------------------------------------------------------------------

    def recorded(self) -> dict[str, Any]:
        """What the last run shipped, if the directory on the build host is still that one."""
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}
        token = self.system.read_text(f"{self.directory}/{TOKEN_FILE}", limit=256)
        if not isinstance(record, dict) or not token or token.strip() != record.get("token"):
            return {}
        return record

    def ship(self, console: Console) -> ShipReport:
        """Send what changed since the last run (everything the first time)."""
        current = scan(self.tree)
        record = self.recorded()
        before = record.get("files") or {}
        changed = sorted(name for name, state in current.items() if before.get(name) != state)
        removed = sorted(name for name in before if name not in current)
        size = sum(current[name][0] for name in changed if current[name][0] != "link")
        report = ShipReport(files=len(changed), bytes=size, removed=len(removed), full=not before)
        self.system.makedirs(self.directory)
        with console.progress(report.bytes or None, f"ship to {self.system.host}", unit="B") as bar:
            self.system.put_tree(self.tree, self.directory, progress=bar.update, names=changed)
        if removed:
            script = 'cd "$1" && shift && rm -f -- "$@"'
            self.system.run(["sh", "-c", script, "toa", self.host_directory, *removed], check=True)
        token = secrets.token_hex(16)
        self.system.write_bytes_atomic(f"{self.directory}/{TOKEN_FILE}", token.encode() + b"\n")
        atomic_write_json(self.record_path, {"token": token, "host": self.system.host, "files": current})
        self.shipped = report
        console.say(f"compile: {report.describe()} -> {self.system.host}:{self.host_directory}")
        return report

    # --- compile -------------------------------------------------------------------

    def effective_jobs(self, jobs: int) -> int:
        if jobs > 0:
            return jobs
        answer = self.system.run(["getconf", "_NPROCESSORS_ONLN"]).out.strip()
        return int(answer) if answer.isdigit() and int(answer) > 0 else 1

    def make(
        self, args: list[str], log: Path, on_line: Any = None, timeout: float | None = None
    ) -> kbuild.MakeRun:
        """``make ARGS`` in the tree on the build host, each line into ``log`` as it comes."""
        argv = ["make", *args]
        tail: deque[str] = deque(maxlen=kbuild.TAIL_LINES)
        state = {"steps": 0, "first_error": None}
        started = time.monotonic()
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            sink.write(
                f"\n$ cd {self.host_directory} && {shlex.join(argv)}   [on {self.system.host}]\n".encode()
            )

            def line_in(line: str) -> None:
                sink.write(line.encode(errors="replace") + b"\n")
                sink.flush()
                tail.append(line)
                if state["first_error"] is None and kbuild.ERROR_RE.search(line):
                    state["first_error"] = line.strip()
                if kbuild.is_step(line):
                    state["steps"] += 1
                if on_line is not None:
                    on_line(line)

            status = self.system.stream(
                argv, line_in, timeout=timeout, env={"LC_ALL": "C", "LANG": "C"}, cwd=self.host_directory
            )
            seconds = time.monotonic() - started
            sink.write(f"[exit {status} after {seconds:.1f}s on {self.system.host}]\n".encode())
        first = state["first_error"] or (
            next((t.strip() for t in tail if "***" in t), None) if status else None
        )
        return kbuild.MakeRun(argv, status, seconds, first, list(tail), "", state["steps"])

    def compile(
        self,
        log: Path,
        *,
        jobs: int,
        ccache: bool,
        compat: toolchain.Compat | None,
        console: Console,
        expected_steps: int | None,
    ) -> kbuild.MakeRun:
        """Ship, then ``make -j N`` on the build host with the progress bar; MakeFailed on error."""
        self.ship(console)
        self.jobs = self.effective_jobs(jobs)
        if ccache and self.system.which("ccache") is None:
            console.warn(f"ccache is not installed on {self.system.host}; compiling there without it")
            ccache = False
        with console.progress(
            total=expected_steps or None, desc=f"compile on {self.system.host}", unit="step"
        ) as bar:

            def advance(line: str) -> None:
                if kbuild.is_step(line):
                    bar.update(1)
                    bar.set_postfix_str(line.split()[-1][-40:], refresh=False)

            cc = toolchain.cc_variable(compat, ccache)
            run = self.make(kbuild.compile_args(self.jobs, cc), log, on_line=advance)
        return kbuild.checked(f"compile on {self.system.host}", run, log)

    # --- fetch ---------------------------------------------------------------------

    def fetch(self, release: str, into: Path, log: Path) -> dict[str, Path]:
        """modules_install there, then the artifacts and lib/modules/R back into ``into``."""
        stage = f"{self.directory}.modules"
        self.system.remove(stage, recursive=True)
        run = self.make(["modules_install", f"INSTALL_MOD_PATH={self.system.host_path(stage)}"], log)
        kbuild.checked(f"modules_install on {self.system.host}", run, log)
        files = [BZIMAGE, "System.map", TOA_MODULE_OBJECT, ".config"]
        self.system.get_tree(self.directory, into, names=files)
        modules = into / "modules"
        self.system.get_tree(f"{stage}/lib/modules/{release}", modules)
        self.system.remove(stage, recursive=True)
        return {
            "bzimage": into / BZIMAGE,
            "system_map": into / "System.map",
            "toa_ko": into / TOA_MODULE_OBJECT,
            "config": into / ".config",
            "modules_tree": modules,
        }

    def ask(self, argv: list[str], stdin: str = "") -> str | None:
        """stdout of a short command on the build host, or None when it is missing or fails."""
        result = self.system.run(argv, input=stdin.encode(), timeout=30)
        return result.out if result.ok else None


def first_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else None


def record_path(builds_dir: Path, host: str) -> Path:
    """Where the work directory keeps what was shipped to ``host``."""
    return builds_dir / f"remote-{re.sub(r'[^A-Za-z0-9._-]+', '_', host)}.json"


@contextlib.contextmanager
def build_host(
    settings: Settings, workdir: Workdir, tree: Path, dry_run: bool
) -> Iterator[RemoteBuild | None]:
    """The build host ``settings.build_host`` names, connected and checked (None: build here)."""
    if not settings.build_host:
        yield None
        return
    from toa_kernel.system.opener import open_system

    with open_system(dataclasses.replace(settings, host=settings.build_host)) as system:
        remote = RemoteBuild(system, tree, record_path(workdir.builds, system.host))
        if not dry_run:
            remote.preflight(settings.min_free_gib)
        yield remote
