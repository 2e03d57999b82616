"""Benchmark of the System interface: local versus a real sshd on 127.0.0.1.

    python benchmarks/bench_system.py [--rounds 50]     (as root: it starts sshd)

Measures, for ``LocalSystem`` and ``SshSystem`` (the test suite's sshd with its
logging ForceCommand wrapper, modern and legacy profiles):

- one ``run(["true"])`` (a command round trip);
- one 100 KB ``write_bytes_atomic`` (resolve + temp file + sync + rename + sync);
- one ``read_bytes`` of that file through a symlink.

Medians and 90th percentiles over ``--rounds`` rounds. ``sync`` flushes every
filesystem (CentOS 6 has no ``sync FILE``), so the write figure depends on what
else the machine is writing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(PROJECT_DIR / "tests"))

from sshd_support import start_sshd  # noqa: E402

from toa_kernel.system.api import System  # noqa: E402
from toa_kernel.system.local import LocalSystem  # noqa: E402
from toa_kernel.system.rootfs import Root  # noqa: E402
from toa_kernel.system.ssh import SshSystem  # noqa: E402

PAYLOAD = os.urandom(100 * 1024)


def timed(action: Callable[[], object], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9) - 1]


def measure(name: str, system: System, rounds: int) -> None:
    figures = {
        "run true": timed(lambda: system.run(["true"], check=True), rounds),
        "write 100 KB": timed(lambda: system.write_bytes_atomic("/etc/grub.conf", PAYLOAD), rounds),
        "read 100 KB": timed(lambda: system.read_bytes("/etc/grub.conf"), rounds),
    }
    for what, (median, p90) in figures.items():
        print(f"{name:<14} {what:<14} median {median * 1000:8.1f} ms   p90 {p90 * 1000:8.1f} ms")


def sandbox(base: Path) -> Path:
    root = base / "root"
    (root / "boot/grub").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/grub.conf").symlink_to("../boot/grub/grub.conf")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = sandbox(base)
        measure("local", LocalSystem(Root.of(root)), rounds)
        for profile in ("modern", "legacy"):
            server = start_sshd(profile)
            try:
                options = server.options(server.trust(base / f"known_hosts_{profile}"))
                started = time.perf_counter()
                with SshSystem.connect(server.target(), options, str(root)) as remote:
                    connect = time.perf_counter() - started
                    print(f"ssh {profile:<10} connect        {connect * 1000:8.1f} ms")
                    measure(f"ssh {profile}", remote, rounds)
            finally:
                server.stop()
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
