"""Benchmark of ``invoke rollout``: wall time to 1, 3 and 6 sandbox nodes, waves of 3.

    python benchmarks/bench_fleet.py [--sizes 1,3,6] [--wave 3] [--local]   (as root: it starts sshd)

Each node is a sandbox CentOS 6 root reached through its own real sshd on
127.0.0.1 (``--local``: ``connection=local``, no SSH). One rollout per size,
``--canary 0 --wave 3``, of the sample build's bundle (made once, with
``make targz-pkg``): preflight on every node, ship + sha256 check, unpack, the
node's own installkernel, hooks and grub.conf, then the reboot = the boot lab
booting the node's /boot with the real GRUB legacy under QEMU (TCG), then
verify (``boot,hooks,module-installed``: the lab's stand-in kernel loads no
toa). Prints each size's wall time, the seconds per node of its steps, and the
ratio of the largest size to the smallest. On 2 cores, QEMU boots running at
once share them, so a wave of 3 takes longer than one boot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(PROJECT_DIR / "tests"))

from centos6_root import build_sample  # noqa: E402
from fleet_support import FleetRig, bundle_cache  # noqa: E402
from lab_support import kernel_cache_dir  # noqa: E402
from sshd_support import start_sshd  # noqa: E402

from toa_kernel.lab.kernel import chosen_kernel  # noqa: E402


def one_rollout(
    base: Path, build: dict, bundle_dir: Path, kernel: Path, servers: list, size: int, wave: int
) -> dict:
    rig = FleetRig(base, build, bundle_dir, count=size, mode="lab", kernel=kernel, servers=servers[:size])
    started = time.perf_counter()
    done = rig.invoke(*rig.rollout_args("--canary", "0", "--wave", str(wave), "--json"), timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"rollout to {size} nodes failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    document = json.loads(done.stdout)
    steps = {}
    for name in rig.names:
        state = rig.state(name)
        steps[name] = {
            "install": state["seconds"].get("install"),
            "reboot": (state.get("reboot") or {}).get("seconds"),
            "verify": state["seconds"].get("verify"),
        }
    return {"nodes": size, "wall": round(seconds, 1), "rollout": document["seconds"], "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,6")
    parser.add_argument("--wave", type=int, default=3)
    parser.add_argument("--local", action="store_true", help="connection=local nodes (no sshd)")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    kernel = chosen_kernel(None, kernel_cache_dir(), say=print)
    servers = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        base = Path(tmp)
        try:
            if not options.local:
                servers = [start_sshd() for _ in range(max(sizes))]
            build = build_sample(base / "build")
            bundle_dir = bundle_cache(base / "bundle", build)
            results = []
            for size in sizes:
                result = one_rollout(
                    base / f"n{size}", build, bundle_dir, kernel, servers, size, options.wave
                )
                results.append(result)
                per_node = "; ".join(
                    f"{name} install {s['install']} s, reboot {s['reboot']} s, verify {s['verify']} s"
                    for name, s in result["steps"].items()
                )
                print(f"{size} node(s): {result['wall']:.1f} s wall ({per_node})", flush=True)
        finally:
            for server in servers:
                server.stop()
            subprocess.run(["sync"], check=False)
    first, last = results[0], results[-1]
    print(
        f"ratio {last['nodes']} nodes / {first['nodes']} node: {last['wall'] / first['wall']:.2f} "
        f"(waves of {options.wave}, {'local' if options.local else 'ssh'} nodes)"
    )
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
