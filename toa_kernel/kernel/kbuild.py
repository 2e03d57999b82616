"""Running the kernel's own make: kconfig, kernelrelease, the compile, artifacts.

Every make runs in its own process group with ``LC_ALL=C``, its output appended
to the build's log; Ctrl-C stops the whole group (SIGINT first, so make removes
half-written targets, then SIGTERM, then SIGKILL).

- kconfig: ``olddefconfig`` when the tree has it, else ``silentoldconfig`` (2.6.32).
  2.6.32's silentoldconfig refuses to ask about a NEW option without a terminal
  ("Console input/output is redirected"); then ``oldconfig`` answers every
  question with its default (``yes "" | make oldconfig``) and silentoldconfig runs again.
- release: ``make include/config/kernel.release`` then ``make -s kernelrelease``:
  the kernel computes it, nothing is guessed.
- compile: ``make -j N`` with a progress bar counting Kbuild's quiet lines
  (``  CC      init/main.o``).
- artifacts: ``bzImage`` recognised by libmagic and carrying the release;
  ``toa.ko`` an ELF relocatable whose ``.modinfo`` vermagic carries the release.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.kernel.modinfo import ModuleInfo, read_module_info

QUIET_LINE_RE = re.compile(r"^  ([A-Z][A-Z0-9_]*(?: \[M\])?) +(\S.*)$")
NOT_WORK = {"CHK", "CALL", "MODPOST", "SYMLINK"}  # Kbuild steps that run on every make
ERROR_RE = re.compile(r"\berror:", re.IGNORECASE)
REDIRECTED = "Console input/output is redirected"
TAIL_LINES = 40
STOP_GRACE_SECONDS = 10.0


@dataclass
class MakeRun:
    """One finished make: argv, exit status, first error line and last lines of output."""

    argv: list[str]
    returncode: int
    seconds: float
    first_error: str | None
    tail: list[str]
    output: str = ""
    steps: int = 0

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass
class KconfigRun:
    """Which kconfig target ran, and whether the oldconfig fallback was needed."""

    target: str
    fallback: bool
    runs: list[MakeRun] = field(default_factory=list)


class MakeFailed(EnvironmentFailure):
    """make exited non-zero; carries the first error line, the tail and the log path."""

    def __init__(self, what: str, run: MakeRun, log: Path, fix: str = "") -> None:
        first = run.first_error or (run.tail[-1] if run.tail else "no output")
        super().__init__(
            f"{what} failed ({run.command}, exit {run.returncode}): {first}",
            fix or f"read the log {log}, fix the cause and run the build again",
        )
        self.run = run
        self.log = log

    def details(self) -> str:
        """The last lines of output and where the whole log is."""
        lines = "\n".join(f"  | {line}" for line in self.run.tail)
        return f"last {len(self.run.tail)} lines of output:\n{lines}\nfull log: {self.log}"


class ArtifactMismatch(EnvironmentFailure):
    """A build artifact is missing or does not belong to the release."""


# --- running make ---------------------------------------------------------------


def make_env() -> dict[str, str]:
    """The environment make runs in: the caller's, with C messages."""
    return {**os.environ, "LC_ALL": "C", "LANG": "C"}


def stop_group(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop a process group: SIGINT (make cleans up), then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def feed_newlines(pipe: IO[bytes]) -> None:
    """Answer every question with Enter, like ``yes ""``, until the reader goes away."""
    chunk = b"\n" * 4096
    with contextlib.suppress(OSError, ValueError):
        while True:
            pipe.write(chunk)
            pipe.flush()


def run_make(
    tree: Path,
    args: Sequence[str],
    log: Path,
    *,
    answer_defaults: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> MakeRun:
    """Run ``make ARGS`` in ``tree``; all output (stdout and stderr) appended to ``log``."""
    argv = ["make", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    first_error: str | None = None
    lines: list[str] = []
    steps = 0
    with open(log, "ab") as sink:
        sink.write(f"\n$ cd {tree} && {shlex.join(argv)}\n".encode())
        sink.flush()
        try:
            process = subprocess.Popen(
                argv,
                cwd=tree,
                stdin=subprocess.PIPE if answer_defaults else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=make_env(),
                start_new_session=True,
            )
        except FileNotFoundError:
            raise EnvironmentFailure(
                "'make' is not installed or not on PATH", "yum install make (CentOS 6)"
            ) from None
        feeder = None
        if answer_defaults and process.stdin is not None:
            feeder = threading.Thread(target=feed_newlines, args=(process.stdin,), daemon=True)
            feeder.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                sink.write(raw)
                line = raw.decode(errors="replace").rstrip("\n")
                tail.append(line)
                if len(lines) < 2000:
                    lines.append(line)
                if first_error is None and ERROR_RE.search(line):
                    first_error = line.strip()
                if is_step(line):
                    steps += 1
                if on_line is not None:
                    on_line(line)
            returncode = process.wait()
        except BaseException:
            stop_group(process)
            sink.write(b"\n[stopped by the user]\n")
            raise
        finally:
            if feeder is not None:
                feeder.join(timeout=5)
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
        seconds = time.monotonic() - started
        sink.write(f"[exit {returncode} after {seconds:.1f}s]\n".encode())
    if first_error is None and returncode != 0:
        first_error = next((t.strip() for t in tail if "***" in t), None)
    return MakeRun(argv, returncode, seconds, first_error, list(tail), "\n".join(lines), steps)


def is_step(line: str) -> bool:
    """True for a Kbuild quiet line that does work (``  CC [M]  net/toa/toa.o``)."""
    match = QUIET_LINE_RE.match(line)
    return bool(match) and match.group(1) not in NOT_WORK


def checked(what: str, run: MakeRun, log: Path, fix: str = "") -> MakeRun:
    """``run`` when it succeeded, else ``MakeFailed``."""
    if run.returncode != 0:
        raise MakeFailed(what, run, log, fix)
    return run


# --- kconfig ----------------------------------------------------------------------


def kconfig_target(tree: Path) -> str:
    """``olddefconfig`` when the tree's kconfig has it, else ``silentoldconfig``."""
    texts = []
    for relative in ("scripts/kconfig/Makefile", "Makefile"):
        path = tree / relative
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    joined = "\n".join(texts)
    if re.search(r"^olddefconfig\b", joined, re.MULTILINE):
        return "olddefconfig"
    return "silentoldconfig"


def run_kconfig(tree: Path, log: Path) -> KconfigRun:
    """Bring ``.config`` in line with the tree's Kconfig without asking anything."""
    target = kconfig_target(tree)
    first = run_make(tree, [target], log)
    result = KconfigRun(target, fallback=False, runs=[first])
    if first.returncode != 0 and REDIRECTED in first.output:
        result.fallback = True
        defaults = run_make(tree, ["oldconfig"], log, answer_defaults=True)
        result.runs.append(checked("make oldconfig", defaults, log))
        result.runs.append(run_make(tree, [target], log))
    checked(
        f"kconfig ({target})",
        result.runs[-1],
        log,
        f"read {log}; run 'make {target}' in {tree} by hand to see what it asks",
    )
    return result


# --- release ----------------------------------------------------------------------


def kernelrelease(tree: Path, log: Path, regenerate: bool = True) -> str:
    """The release the kernel itself computes (``make -s kernelrelease``)."""
    if regenerate:
        checked(
            "make include/config/kernel.release",
            run_make(tree, ["include/config/kernel.release"], log),
            log,
        )
    run, stdout = capture_make(tree, ["-s", "kernelrelease"], log)
    checked("make -s kernelrelease", run, log, f"run 'make include/config/kernel.release' in {tree} first")
    release = last_word_line(stdout)
    if release is None:
        raise EnvironmentFailure(
            f"make -s kernelrelease printed no release in {tree}",
            f"read {log}; the top Makefile may be damaged ('invoke fetch --force' unpacks it again)",
        )
    return release


def capture_make(tree: Path, args: Sequence[str], log: Path) -> tuple[MakeRun, str]:
    """Run a quick make whose stdout is the answer (stderr only goes to the log)."""
    argv = ["make", *args]
    started = time.monotonic()
    try:
        result = subprocess.run(
            argv, cwd=tree, capture_output=True, text=True, env=make_env(), stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise EnvironmentFailure(
            "'make' is not installed or not on PATH", "yum install make (CentOS 6)"
        ) from None
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", errors="replace") as sink:
        sink.write(f"\n$ cd {tree} && {shlex.join(argv)}\n{result.stderr}{result.stdout}")
        sink.write(f"[exit {result.returncode}]\n")
    lines = (result.stderr + result.stdout).splitlines()
    first_error = next((line.strip() for line in lines if ERROR_RE.search(line) or "***" in line), None)
    run = MakeRun(argv, result.returncode, time.monotonic() - started, first_error, lines[-TAIL_LINES:])
    return run, result.stdout


def expected_release(tree: Path, extraversion: str) -> str | None:
    """VERSION.PATCHLEVEL.SUBLEVEL + ``extraversion`` from ``make -s kernelversion``.

    Read-only (for dry runs): nothing in the tree is written. None when make fails.
    """
    try:
        result = subprocess.run(
            ["make", "-s", "kernelversion", f"EXTRAVERSION={extraversion}"],
            cwd=tree,
            capture_output=True,
            text=True,
            env=make_env(),
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return last_word_line(result.stdout) if result.returncode == 0 else None


def last_word_line(output: str) -> str | None:
    """The last non-empty line of ``output`` when it is a single word."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines or len(lines[-1].split()) != 1:
        return None
    return lines[-1]


# --- compile ------------------------------------------------------------------------


def compile_args(jobs: int, cc: str | None = None) -> list[str]:
    """make's arguments for the compile: ``-j N``, and ``CC=...`` when it is not make's default."""
    return [f"-j{jobs}", *([cc] if cc else [])]


def compile_tree(
    tree: Path, log: Path, *, args: Sequence[str], console: Console, expected_steps: int | None
) -> MakeRun:
    """``make ARGS`` with a progress bar of compile steps; ``MakeFailed`` on error."""
    with console.progress(total=expected_steps or None, desc="compile", unit="step") as bar:

        def advance(line: str) -> None:
            if is_step(line):
                bar.update(1)
                bar.set_postfix_str(line.split()[-1][-40:], refresh=False)

        run = run_make(tree, args, log, on_line=advance)
    return checked("compile", run, log)


# --- artifacts ----------------------------------------------------------------------


def check_module(path: Path, release: str) -> ModuleInfo:
    """``toa.ko`` must be an ELF relocatable whose vermagic starts with ``release``."""
    if not path.is_file():
        raise ArtifactMismatch(
            f"{path} was not built",
            "check that .config has CONFIG_TOA=m and net/Makefile has 'obj-$(CONFIG_TOA) += toa/'",
        )
    try:
        info = read_module_info(path)
    except UserError as exc:
        raise ArtifactMismatch(exc.message, "the compile did not finish properly; build again") from None
    if info.release != release:
        raise ArtifactMismatch(
            f"{path} has vermagic {info.vermagic.strip()!r}, which is not for release {release}",
            "the module is stale: run the compile step again ('invoke build')",
        )
    return info


def check_system_map(path: Path) -> Path:
    """``System.map`` must exist (make install and install-kernel copy it to /boot)."""
    if not path.is_file():
        raise ArtifactMismatch(f"{path} was not built", "read the compile log and build again")
    return path


def describe_file(path: Path) -> str:
    """libmagic's description of a file."""
    import magic  # python-magic; imported here so the rest of the module loads without libmagic

    return str(magic.from_file(str(path)))


def header_version(data: bytes) -> str | None:
    """The kernel version string a bzImage's boot header points to."""
    if data[0x202:0x206] != b"HdrS" or len(data) < 0x210:
        return None
    (pointer,) = struct.unpack_from("<H", data, 0x20E)
    start = pointer + 0x200
    end = data.find(b"\0", start, start + 512)
    return data[start:end].decode(errors="replace") if pointer and end > start else None


def check_bzimage(path: Path, release: str) -> str:
    """``bzImage`` must be a Linux kernel image whose version starts with ``release``."""
    if not path.is_file():
        raise ArtifactMismatch(f"{path} was not built", "read the compile log and build again")
    description = describe_file(path)
    if "Linux kernel" not in description:
        raise ArtifactMismatch(
            f"{path} is not a Linux kernel image (libmagic says: {description})", "build again"
        )
    match = re.search(r"version (\S+)", description)
    version = match.group(1) if match else (header_version(path.read_bytes()) or "").split(" ")[0]
    if version.rstrip(",") != release:
        raise ArtifactMismatch(
            f"{path} carries version {version or '(none)'!r}, not release {release}",
            "the image is stale: run the compile step again ('invoke build')",
        )
    return description
