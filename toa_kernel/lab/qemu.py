"""Boot the lab image under QEMU (TCG) and capture the serial console.

``qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -net none -drive
file=IMG,format=raw,if=ide`` with stdin closed: the serial console is QEMU's
stdout, copied to a log file as it arrives. The guest powers off by itself
(``poweroff -f``; a kernel panic reboots, which ``-no-reboot`` turns into an
exit); when GRUB gets stuck at a prompt the run is stopped at once rather than
waiting for the timeout. KVM is not used: on the machines this was measured on,
the kernel hangs after ``Probing EDD`` under KVM.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toa_kernel.lab.console import boot_is_over
from toa_kernel.lab.tools import program

MEMORY_MIB = 512
GRACE_SECONDS = 2.0
READ_SIZE = 65536


NO_NETWORK = ("-net", "none")


def machine_args(memory_mib: int = MEMORY_MIB) -> list[str]:
    """The emulated machine: TCG, serial console on stdout, no reboot."""
    return [
        program("qemu-system-x86_64"),
        "-accel",
        "tcg",
        "-m",
        str(memory_mib),
        "-nographic",
        "-no-reboot",
    ]


def qemu_command(image: Path, memory_mib: int = MEMORY_MIB, network: Sequence[str] = NO_NETWORK) -> list[str]:
    """The QEMU command line that boots ``image`` from its MBR (no NIC unless ``network``)."""
    return [*machine_args(memory_mib), *network, "-drive", f"file={image},format=raw,if=ide"]


@dataclass
class BootRun:
    """One QEMU run: the console text and how it ended."""

    output: str
    seconds: float
    timed_out: bool
    stopped: bool  # killed by us after the console showed the boot was over
    returncode: int | None


def run_qemu(
    image: Path,
    log: Path,
    timeout: float,
    is_over: Callable[[str], bool] = boot_is_over,
    *,
    command: list[str] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> BootRun:
    """Boot ``image``; copy the console to ``log``; stop on power-off, a stuck GRUB or ``timeout``.

    ``command`` replaces the default command line (another boot or a NIC);
    ``stop_when`` is asked between reads: once it says True, QEMU gets the grace
    period to finish and is then stopped, as when the console shows the end.
    """
    started = time.monotonic()
    chunks: list[bytes] = []
    over_at: float | None = None
    timed_out = False
    process = subprocess.Popen(
        command or qemu_command(image),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        with open(log, "wb") as sink:
            while True:
                now = time.monotonic()
                if now - started > timeout:
                    timed_out = True
                    break
                if over_at is not None and now - over_at > GRACE_SECONDS:
                    break
                if over_at is None and stop_when is not None and stop_when():
                    over_at = now
                if not selector.select(timeout=0.2):
                    continue
                data = os.read(process.stdout.fileno(), READ_SIZE)
                if not data:
                    break
                chunks.append(data)
                sink.write(data)
                sink.flush()
                if over_at is None and is_over(b"".join(chunks).decode(errors="replace")):
                    over_at = time.monotonic()
    finally:
        selector.close()
        stopped = stop(process)
        process.stdout.close()
    return BootRun(
        output=b"".join(chunks).decode(errors="replace"),
        seconds=round(time.monotonic() - started, 2),
        timed_out=timed_out,
        stopped=stopped and not timed_out,
        returncode=process.returncode,
    )


def stop(process: subprocess.Popen[bytes]) -> bool:
    """End QEMU if it still runs; True when it had to be stopped."""
    if process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    return True
