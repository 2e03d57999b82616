"""A sandbox server's reboot: boot ROOT's /boot with the real GRUB legacy, then
write what booted into ROOT/proc.

A sandbox root (a directory shaped like a CentOS 6 server) cannot reboot. This
gives it the next best thing: its ``/boot`` is written into a lab disk image
(lab/multiboot.py), powered on once under QEMU (a kernel that panics with
``panic=N`` reboots inside that power-on, as a server does), what GRUB wrote
on the disk (``/boot/grub/default``) comes back into the root, and the facts
of the boot that came up go where a running system shows them:

- ``ROOT/proc/sys/kernel/osrelease``: the release of the entry GRUB booted;
- ``ROOT/proc/cmdline``: that entry's kernel command line as the kernel saw it;
- ``ROOT/proc/sys/kernel/random/boot_id``: the boot id the booted kernel made;
- ``ROOT/proc/modules``: empty (nothing loaded yet after a boot, as far as the
  lab can tell: its stand-in kernel loads no module), ``proc/net/toa_stats`` gone.

So what ``invoke verify`` sees in the root after this is what a real GRUB booted.
When no kernel came up (GRUB stuck, a hang), ``/proc`` is left as it was: the
server did not come back, and whoever waits for a new boot id times out.

``python3 -m toa_kernel.lab.reboot`` runs it as a rollout's ``reboot_hook``:
the root is ``--root`` or ``$TOA_FLEET_ROOT``, the artifacts go to
``--workdir`` (or ``$TOA_FLEET_WORKDIR``) ``/lab/reboot-N/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from toa_kernel.core.errors import ToaError, UserError
from toa_kernel.core.fileops import atomic_write, atomic_write_json
from toa_kernel.core.layout import PROC_CMDLINE, PROC_MODULES, PROC_OSRELEASE, PROC_TOA_STATS
from toa_kernel.core.state import now_iso
from toa_kernel.lab.kernel import chosen_kernel
from toa_kernel.lab.multiboot import BootRecord, LabDisk
from toa_kernel.system.rootfs import Root

PROC_BOOT_ID = "/proc/sys/kernel/random/boot_id"
BOOT_LOG = "/var/log/lab-boots.log"


@dataclass
class RebootResult:
    """What one lab reboot of a root brought up."""

    root: str
    image: str
    boots: list[BootRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def last(self) -> BootRecord | None:
        return self.boots[-1] if self.boots else None

    @property
    def came_up(self) -> bool:
        """A kernel booted and its initramfs reported (the server is back)."""
        last = self.last
        return bool(last and last.report.guest_ran and last.report.markers.get("bootid"))

    @property
    def boot_id(self) -> str | None:
        return self.last.report.markers.get("bootid") if self.came_up and self.last else None

    def as_dict(self) -> dict[str, Any]:
        last = self.last
        return {
            "root": self.root,
            "image": self.image,
            "came_up": self.came_up,
            "release": last.release if last else None,
            "cmdline": last.report.cmdline if last else None,
            "boot_id": self.boot_id,
            "boots": [boot.as_dict() for boot in self.boots],
            "seconds": self.seconds,
        }


def write_proc(root: Root, release: str, cmdline: str, boot_id: str) -> None:
    """The running system's facts after a boot, under the root."""
    for system_path, text in (
        (PROC_OSRELEASE, release + "\n"),
        (PROC_CMDLINE, cmdline + "\n"),
        (PROC_BOOT_ID, boot_id + "\n"),
        (PROC_MODULES, ""),
    ):
        path = root.path(system_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    root.path(PROC_TOA_STATS).unlink(missing_ok=True)


def log_boot(root: Root, result: RebootResult) -> None:
    """One JSON line per completed reboot in ROOT/var/log/lab-boots.log (what booted, when)."""
    path = root.path(BOOT_LOG)
    path.parent.mkdir(parents=True, exist_ok=True)
    last = result.last
    line = {
        "at": now_iso(),
        "release": last.release if last else None,
        "boot_id": result.boot_id,
        "entries": [boot.title for boot in result.boots],
    }
    with open(path, "a") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")


def next_base(workdir: Path) -> Path:
    """``WORKDIR/lab/reboot-N`` for the next reboot (the earlier ones are kept)."""
    lab = workdir / "lab"
    number = 1
    while (lab / f"reboot-{number}").exists():
        number += 1
    return lab / f"reboot-{number}"


def reboot_root(
    root: Root,
    workdir: Path,
    kernel: Path,
    *,
    timeout: float = 120.0,
    omit: Iterable[str] = (),
    say: Callable[[str], None] = print,
) -> RebootResult:
    """Power ``root``'s disk on once; when a kernel comes up, its facts go into ``root``/proc."""
    started = time.monotonic()
    base = next_base(workdir)
    disk = LabDisk.build(root, base, kernel, omit=omit, timeout=timeout)
    result = RebootResult(root=str(root.base), image=str(disk.image))
    result.boots = disk.boot(say=say)
    disk.take_saved_default(root)
    last = result.last
    if result.came_up and last is not None and last.release and result.boot_id:
        write_proc(root, last.release, last.report.cmdline or "", result.boot_id)
        log_boot(root, result)
    result.seconds = round(time.monotonic() - started, 2)
    atomic_write_json(base / "result.json", result.as_dict())
    return result


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m toa_kernel.lab.reboot",
        description="Reboot a sandbox root with the boot lab and write what booted into ROOT/proc.",
    )
    parser.add_argument("--root", default=os.environ.get("TOA_FLEET_ROOT"), help="the root ($TOA_FLEET_ROOT)")
    parser.add_argument(
        "--workdir",
        default=os.environ.get("TOA_FLEET_WORKDIR") or "work",
        help="artifacts go to WORKDIR/lab/",
    )
    parser.add_argument("--kernel", help="the bzImage standing in for every kernel (default: Debian's)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one power-on may take")
    parser.add_argument("--omit", action="append", default=[], help="a /boot file the disk has lost")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = arguments(argv)
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if not options.root:
            raise UserError("which root? no --root and no TOA_FLEET_ROOT", "pass --root DIR")
        workdir = Path(options.workdir)
        kernel = chosen_kernel(
            Path(options.kernel) if options.kernel else None, workdir / "lab" / "kernel", say
        )
        result = reboot_root(
            Root.of(options.root), workdir, kernel, timeout=options.timeout, omit=options.omit, say=say
        )
    except ToaError as exc:
        print(exc.render(), file=sys.stderr, flush=True)
        return exc.exit_code
    last = result.last
    came = f"came up: {last.release} ({last.title})" if result.came_up and last else "did not come up"
    print(f"lab reboot of {result.root}: {came} after {result.seconds:g} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
