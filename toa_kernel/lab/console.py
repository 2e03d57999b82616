"""Read a lab boot's serial console: what GRUB did and what the guest said.

GRUB legacy prints ``Booting 'TITLE'`` for every entry it tries, ``Error NN: …``
when one fails, ``Press any key to continue...`` when it gives up on an entry
with no fallback, and ``grub> `` when it lands on its command line. The lab's
``/init`` prints lines starting with ``MARK``: the release whose initramfs it
is, ``uname -r`` and ``/proc/cmdline``, then ``MARK end`` before powering off.
GRUB wraps long lines at 80 columns, so the command line is read from the
guest's own line, never from GRUB's echo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MARK = "TOA-LAB"
ANSI_RE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[A-Za-z=>])")
BOOTING_RE = re.compile(r"Booting '(?P<title>.*)'\s*$")
GRUB_ERROR_RE = re.compile(r"(Error \d+: [^\n]*)")
MARKER_RE = re.compile(rf"^{MARK} (?P<key>[a-z]+)(?:=(?P<value>.*))?$")
PRESS_ANY_KEY = "Press any key to continue"
GRUB_PROMPT_RE = re.compile(r"(^|\n)\s*grub>")
GRUB_START = "GRUB loading, please wait"  # stage2 starting: one per power-on or reboot
PANIC_RE = re.compile(r"Kernel panic - not syncing: ?(?P<why>[^\n]*)")


def clean(text: str) -> str:
    """Console text without terminal escape sequences and carriage returns."""
    text = ANSI_RE.sub("", text).replace("\ufffd", "")  # bytes a serial driver sends while starting
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass
class ConsoleReport:
    """What one boot's console shows."""

    tried: list[str] = field(default_factory=list)
    grub_errors: list[str] = field(default_factory=list)
    grub_prompt: bool = False
    gave_up: bool = False
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def guest_ran(self) -> bool:
        """The lab initramfs's /init ran (a kernel booted with an initramfs)."""
        return "release" in self.markers

    @property
    def finished(self) -> bool:
        """The guest printed everything and went on to power off."""
        return "end" in self.markers

    @property
    def booted_title(self) -> str | None:
        """The title of the entry whose kernel ran: the last one GRUB tried."""
        return self.tried[-1] if self.guest_ran and self.tried else None

    @property
    def release(self) -> str | None:
        """The release of the entry that booted (its initramfs's marker)."""
        return self.markers.get("release")

    @property
    def cmdline(self) -> str | None:
        return self.markers.get("cmdline")

    @property
    def stuck(self) -> bool:
        """GRUB stopped: a prompt or 'press any key' after an error."""
        return not self.guest_ran and (self.grub_prompt or self.gave_up)


def parse_console(text: str) -> ConsoleReport:
    """Turn raw console output into a ``ConsoleReport``."""
    report = ConsoleReport()
    cleaned = clean(text)
    for raw in cleaned.split("\n"):
        line = raw.strip()
        booting = BOOTING_RE.search(line)
        if booting:
            report.tried.append(booting.group("title"))
        report.grub_errors.extend(m.group(1).strip() for m in GRUB_ERROR_RE.finditer(line))
        if PRESS_ANY_KEY in line:
            report.gave_up = True
        marker = MARKER_RE.match(line)
        if marker and marker.group("key") not in report.markers:
            report.markers[marker.group("key")] = (marker.group("value") or "").strip()
    report.grub_prompt = bool(GRUB_PROMPT_RE.search(cleaned))
    return report


def boot_is_over(text: str) -> bool:
    """True once nothing more will happen: the guest is done or GRUB is stuck."""
    report = parse_console(text)
    return report.finished or report.stuck


def split_boots(text: str) -> list[str]:
    """One console text per GRUB start (a QEMU run that reboots holds several boots).

    Each part begins at GRUB's ``GRUB loading, please wait``; what came before the
    first one (the BIOS) goes with the first boot.
    """
    parts = text.split(GRUB_START)
    if len(parts) == 1:
        return [text]
    boots = [GRUB_START + part for part in parts[1:]]
    boots[0] = parts[0] + boots[0]
    return boots


def panic_reason(text: str) -> str | None:
    """Why the kernel panicked on this console (``VFS: Unable to mount root fs ...``), or None."""
    match = PANIC_RE.search(clean(text))
    return match.group("why").strip() if match else None


def last_lines(text: str, count: int = 30) -> str:
    """The last ``count`` non-empty lines of console output, cleaned."""
    lines = [line for line in clean(text).split("\n") if line.strip()]
    return "\n".join(lines[-count:])
