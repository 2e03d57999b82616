"""Benchmark of ``invoke install-kernel`` on the sample tree: this machine versus over SSH.

    python benchmarks/bench_install.py [--rounds 3]     (as root: it starts sshd)

Builds the sample tree once (``invoke build``'s code), then per round installs it
with the real command line into two fresh CentOS 6 sandbox roots: one with
``--root ROOT`` (this machine), one with ``--host root@127.0.0.1:PORT --root ROOT``
through the test suite's sshd (with its logging ForceCommand wrapper, which
runs each command under ``bash --posix``; a real CentOS 6 sshd runs the login
shell instead). The wall times include starting Python and invoke. Prints every
round, the medians and their ratio, and the number of commands the server ran.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(PROJECT_DIR / "tests"))

from centos6_root import build_sample  # noqa: E402
from sshd_support import start_sshd  # noqa: E402

from toa_kernel.core.state import Workdir  # noqa: E402
from toa_kernel.demo.sandbox import centos6_root  # noqa: E402


def install(flags: list[str], workdir: Path) -> float:
    command = [sys.executable, "-m", "invoke", "-r", str(PROJECT_DIR), "install-kernel", "--quiet", *flags]
    started = time.monotonic()
    done = subprocess.run([*command, "--workdir", str(workdir)], capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    base = Path(tempfile.mkdtemp(prefix="toa-bench-install-"))
    build = build_sample(base / "build")
    server = start_sshd()
    try:
        known = server.trust(base / "known_hosts")
        remote = ["--host", f"root@127.0.0.1:{server.port}", "--ssh-key", str(server.client_key)]
        remote += ["--known-hosts", str(known)]
        times: dict[str, list[float]] = {"local": [], "ssh": []}
        logged = len(server.commands())
        for index in range(rounds):
            for kind in ("local", "ssh"):
                root = centos6_root(base / f"{kind}-{index}" / "root")
                work = Workdir(base / f"{kind}-{index}" / "work").ensure()
                work.update_manifest("build", build)
                flags = ["--root", str(root)] + (remote if kind == "ssh" else [])
                times[kind].append(install(flags, work.path))
            print(f"round {index + 1}: local {times['local'][-1]:.2f} s, ssh {times['ssh'][-1]:.2f} s")
        local, ssh = statistics.median(times["local"]), statistics.median(times["ssh"])
        commands = (len(server.commands()) - logged) / rounds
        print(f"median: local {local:.2f} s, ssh {ssh:.2f} s, ratio {ssh / local:.2f}")
        print(f"commands the server ran per install: {commands:.0f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
