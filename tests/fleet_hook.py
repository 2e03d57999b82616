"""A rollout's ``reboot_hook`` for the fleet tests: reboot a sandbox node.

Run by the rollout with the node in ``TOA_FLEET_*`` variables; its one argument
is a JSON file written by the test:

- ``mode``: ``lab`` boots the node's /boot with the real GRUB legacy under QEMU
  (toa_kernel/lab/reboot.py) and writes what booted into ROOT/proc; ``quick``
  (the fast tests of the scheduler) writes the facts of the entry grub.conf
  names as the default (its fallback when the kernel file is "lost") without
  booting anything.
- ``kernel``: the lab's stand-in kernel.
- ``lost``: node name -> /boot files the node's disk has lost (GRUB cannot load
  them, as on a damaged disk), for the reboots of the install phase.
- ``kill_parent``: node name -> ``before`` or ``after``: SIGKILL the rollout
  (this process's parent) the first time this node is rebooted, before the
  reboot (which then never happens) or after it, then never again (a marker
  file remembers).
- ``hang``: nodes that never come back from a reboot.
- ``calls``: a file where every call is appended (node and phase).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from pathlib import Path

# The checkout this hook belongs to, whatever toa_kernel is installed (the rollout runs it as a script).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toa_kernel.core.fileops import atomic_write
from toa_kernel.lab.reboot import BOOT_LOG, reboot_root, write_proc
from toa_kernel.system.rootfs import Root
from toa_kernel.verify.facts import grub_facts_from_text


def quick_reboot(root: Root, lost: list[str]) -> None:
    """What GRUB would boot, from grub.conf, without booting it (the scheduler tests)."""
    text = root.path("/boot/grub/grub.conf").read_text()
    saved = root.path("/boot/grub/default")
    facts = grub_facts_from_text(text, saved_default_text=saved.read_text() if saved.is_file() else None)
    entry = facts.default_entry
    if entry is not None and f"/boot{entry.kernel}" in lost and facts.fallback:
        entry = facts.entry(facts.fallback[0])
    assert entry is not None and entry.release, "no entry to boot"
    boot_id = str(uuid.uuid4())
    write_proc(root, entry.release, entry.kernel_args, boot_id)
    log = root.path(BOOT_LOG)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(json.dumps({"release": entry.release, "boot_id": boot_id, "quick": True}) + "\n")


def kill_parent_once(config: dict, host: str, when: str, base: Path) -> bool:
    """SIGKILL the rollout the first time (True when it did)."""
    if config.get("kill_parent", {}).get(host) != when:
        return False
    marker = base / f"killed-{host}"
    if marker.exists():
        return False
    atomic_write(marker, "killed\n")
    os.kill(os.getppid(), signal.SIGKILL)
    return True


def main() -> int:
    config_path = Path(sys.argv[1])
    config = json.loads(config_path.read_text())
    host, phase = os.environ["TOA_FLEET_HOST"], os.environ["TOA_FLEET_PHASE"]
    root = Root.of(os.environ["TOA_FLEET_ROOT"])
    with open(config["calls"], "a") as calls:
        calls.write(f"{host} {phase}\n")
    if kill_parent_once(config, host, "before", config_path.parent):
        return 0  # the rollout died before the reboot left it: the node never rebooted
    if host in config.get("hang", []):
        return 0  # the reboot was sent; the node never comes back
    lost = config.get("lost", {}).get(host, []) if phase == "install" else []
    if config["mode"] == "lab":
        workdir = Path(os.environ["TOA_FLEET_WORKDIR"])
        result = reboot_root(root, workdir, Path(config["kernel"]), omit=lost, say=lambda text: None)
        print(f"lab reboot of {host}: {result.as_dict()['release']} (came up: {result.came_up})")
    else:
        quick_reboot(root, lost)
    kill_parent_once(config, host, "after", config_path.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
