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
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> tuple[dict, float]:
    """``invoke ARGS --json`` from the project; its JSON document and wall time."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *args, "--json"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"invoke {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout), seconds


def timed_shell(command: str, cwd: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        command, shell=True, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.monotonic() - started


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
        fetched, fetch_seconds = invoke(
            "fetch", "--tarball", str(args.tarball.resolve()), "--workdir", str(workdir)
        )
        tree = Path(fetched["tree"])
        common = ("build", "--workdir", str(workdir), "--config-base", args.config_base, "--jobs", args.jobs)
        print(f"load before: {load()}", flush=True)
        built, build_seconds = invoke(*common)
        compile_step = next(s for s in built["steps"] if s["name"] == "compile")
        compile_seconds = compile_step["seconds"]
        print(f"invoke build: {build_seconds:.1f} s (compile step {compile_seconds:.1f} s); load {load()}")
        _, noop_seconds = invoke(*common)
        print(f"invoke build, nothing to do: {noop_seconds:.1f} s; load {load()}")
        command = (
            json.loads(Path(built["metadata"]).read_text())["toolchain"].get("compile_command") or "make"
        )
        timed_shell("make clean", tree)
        plain_seconds = timed_shell(command, tree)
        print(f"plain {command}: {plain_seconds:.1f} s; load {load()}")
        print(f"ratio invoke build / plain make: {build_seconds / plain_seconds:.3f}")
        print(f"fetch {fetch_seconds:.1f} s; tree {tree}; same command: {shlex.quote(command)}")
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
