"""Benchmark of ``invoke build`` on the real LVS 2.6.32 tree against plain ``make``.

    python benchmarks/bench_build.py --tarball lvs-kernel-2.6.32-220.23.1.el6.rs.tar.xz \
        [--config-base lab] [--jobs 2] [--dir /var/tmp]

1. ``invoke fetch --tarball`` into a fresh work directory;
2. ``invoke build`` (every step: patches, toolchain set, config, release,
   compile, artifact checks, records), timed;
3. ``invoke build`` again (nothing to do: must not recompile), timed;
4. ``make clean`` in the same tree, then the compile command the build
   recorded (``make -jN CC=...``: same tree, same config, same variables),
   timed: plain make's cost for the same work.

Prints the times, the ratio invoke/plain and the load averages seen, since on
a shared machine other processes change both. Everything is written under a
temporary directory that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def cpu_seconds() -> float:
    """User + system time of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str] | str, **options: object) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; its result, wall seconds and CPU seconds (less sensitive to other load)."""
    cpu, started = cpu_seconds(), time.monotonic()
    result = subprocess.run(argv, **options)  # type: ignore[call-overload]
    return result, time.monotonic() - started, cpu_seconds() - cpu


def invoke(*args: str) -> tuple[dict, float, float]:
    """``invoke ARGS --json`` from the project; its JSON document, wall and CPU seconds."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    argv = [sys.executable, "-m", "invoke", *args, "--json"]
    result, wall, cpu = timed(argv, cwd=PROJECT_DIR, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"invoke {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout), wall, cpu


def timed_shell(command: str, cwd: Path) -> tuple[float, float]:
    _, wall, cpu = timed(command, shell=True, cwd=cwd, check=True, capture_output=True)
    return wall, cpu


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", required=True, type=Path, help="the LVS tree's tarball")
    parser.add_argument("--config-base", default="lab", help="tree or lab (default lab)")
    parser.add_argument("--jobs", default="2", help="make -j (default 2)")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-build-", dir=args.dir))
    workdir = base / "work"
    try:
        fetched, fetch_seconds, _ = invoke(
            "fetch", "--tarball", str(args.tarball.resolve()), "--workdir", str(workdir)
        )
        tree = Path(fetched["tree"])
        common = ("build", "--workdir", str(workdir), "--config-base", args.config_base, "--jobs", args.jobs)
        print(f"load before: {load()}", flush=True)
        built, build_seconds, build_cpu = invoke(*common)
        compile_seconds = next(s for s in built["steps"] if s["name"] == "compile")["seconds"]
        print(f"invoke build: {build_seconds:.1f} s, CPU {build_cpu:.1f} s (compile {compile_seconds:.1f} s)")
        print(f"  load {load()}", flush=True)
        _, noop_seconds, noop_cpu = invoke(*common)
        print(
            f"invoke build, nothing to do: {noop_seconds:.1f} s, CPU {noop_cpu:.1f} s; load {load()}",
            flush=True,
        )
        command = (
            json.loads(Path(built["metadata"]).read_text())["toolchain"].get("compile_command") or "make"
        )
        timed_shell("make clean", tree)
        plain_seconds, plain_cpu = timed_shell(command, tree)
        print(f"plain {command}: {plain_seconds:.1f} s, CPU {plain_cpu:.1f} s; load {load()}")
        wall_ratio, cpu_ratio = build_seconds / plain_seconds, build_cpu / plain_cpu
        print(f"ratio invoke build / plain make: wall {wall_ratio:.3f}, CPU {cpu_ratio:.3f}")
        print(f"fetch {fetch_seconds:.1f} s; tree {tree}; same command: {shlex.quote(command)}")
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
