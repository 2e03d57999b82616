"""Install the real GRUB legacy 0.97 into the lab image's MBR.

``grub --batch`` with a device map naming only the image, so the shell never
sees a host disk, and ``--no-config-file``, so it never reads the host's
menu.lst. ``setup`` finds stage1/stage2 in the image's ``/grub`` or
``/boot/grub``. The shell exits 0 even when a command fails: its output is
checked for ``Error``. (The shell's ``savedefault`` writes a file next to its
config file on the host; the lab never runs it.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from toa_kernel.core.errors import EnvironmentFailure
from toa_kernel.lab.tools import program

GRUB_ERROR_RE = re.compile(r"Error \d+: .*")
SETUP_TIMEOUT = 120


def grub_commands(partition: int) -> str:
    """The grub shell script that writes GRUB into the image's MBR."""
    return f"root (hd0,{partition})\nsetup (hd0)\nquit\n"


def install_grub(image: Path, partition: int, scratch: Path, log: Path | None = None) -> str:
    """Write GRUB into ``image``'s MBR; return the shell's transcript (also kept in ``log``)."""
    device_map = scratch / "device.map"
    device_map.write_text(f"(hd0) {image.resolve()}\n")
    command = [
        program("grub"),
        "--batch",
        "--no-floppy",
        "--no-config-file",
        "--no-curses",
        f"--device-map={device_map}",
    ]
    try:
        result = subprocess.run(
            command,
            input=grub_commands(partition),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=SETUP_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentFailure(f"the grub shell did not finish within {SETUP_TIMEOUT} s") from exc
    transcript = result.stdout + result.stderr
    if log is not None:
        log.write_text(transcript)
    check_transcript(transcript, result.returncode)
    return transcript


def check_transcript(transcript: str, returncode: int = 0) -> None:
    """Raise when the grub shell reported an error (it exits 0 anyway)."""
    error = GRUB_ERROR_RE.search(transcript)
    if error:
        problem = repr(error.group(0).strip())
    elif returncode != 0:
        problem = f"the shell exited with status {returncode}"
    elif "succeeded" not in transcript:
        problem = "the shell never said 'succeeded'"
    else:
        return
    raise EnvironmentFailure(
        f"installing GRUB legacy into the lab image failed: {problem}",
        "check that grub-legacy 0.97 is installed (apt-get install grub-legacy); "
        "the lab's grub-setup.log has the transcript",
    )
