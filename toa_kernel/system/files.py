"""System files read and planned for writing through a ``System``, byte for byte.

The System counterparts of ``core.fileops.read_text`` and ``core.plan.file_edit``:
a system file (grub.conf, a boot hook, rc.local) is read whole as text that
encodes back to exactly the same bytes (``surrogateescape``, no newline
translation), and a file edit is a ``Change`` that replaces the file through
``System.write_bytes_atomic`` (temporary file, sync, rename, sync; mode and
owner of an existing file kept; symlinks followed inside the root), with the
unified diff a dry run prints. The same code plans a change of this machine's
files and of a server's.
"""

from __future__ import annotations

from typing import Callable

from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import MAX_SYSTEM_FILE, decode_text, encode_text
from toa_kernel.core.plan import Change, unified_diff
from toa_kernel.system.api import System


def read_system_text(system: System, system_path: str, limit: int = MAX_SYSTEM_FILE) -> str:
    """A system file's exact text; FileNotFoundError when it is missing.

    A file larger than ``limit`` (nothing we edit comes near 16 MiB) is refused, so
    is a FIFO or a device (``NotRegularFile``).
    """
    data = system.read_bytes(system_path, limit + 1)
    if len(data) > limit:
        raise UserError(
            f"{system_path} on {system.label} is larger than {limit // (1024 * 1024)} MiB: "
            "not the small text file expected there",
            f"check {system_path}",
        )
    return decode_text(data)


def current_text(system: System, system_path: str) -> str | None:
    """The file's exact text, ``None`` when there is no file."""
    try:
        return read_system_text(system, system_path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def system_file_edit(
    system: System,
    system_path: str,
    new_text: str,
    summary: str,
    *,
    mode: int | None = None,
    before: Callable[[], object] | None = None,
    after: Callable[[str], object] | None = None,
) -> Change | None:
    """A ``Change`` that replaces ``system_path`` on ``system`` by ``new_text`` (None: it holds it).

    ``before`` runs first (a backup); ``after`` gets the system path written (links resolved).
    ``mode`` applies to a new file; an existing one keeps its mode and owner.
    """
    old_text = current_text(system, system_path)
    if old_text == new_text:
        return None

    def write() -> None:
        if before is not None:
            before()
        written = system.write_bytes_atomic(system_path, encode_text(new_text), mode=mode)
        if after is not None:
            after(written.path)

    diff = unified_diff(old_text or "", new_text, system_path.lstrip("/"))
    return Change(summary=summary, action=write, diff=diff)
