"""The TCP option kind of the out-of-tree module: ``#define TCPOPT_TOA`` in its ``toa.h``.

The vendor's elb-toa defines the kind itself, 254, in ``src/toa.h`` (both branches).
``build-module`` sets ``toa.option_code`` (``--option-code``) there, on the staged copy
of the source, with the edit ``invoke build`` makes in ``net/toa/toa.h`` of the 2.6.32
tree (``kernel.tree.option_code_change``): a unified diff in ``--dry-run`` and in the
output, nothing to do when the source already has the kind, a clear refusal when the
source does not define ``TCPOPT_TOA``. The patch ``0006-record-option-kind`` writes the
kind into the module's modinfo (``tcpopt_toa``): ``check_built_kind`` reads it back from
the built ``.ko``, and ``invoke verify`` reports it for the installed one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import read_text
from toa_kernel.core.plan import Change, Plan
from toa_kernel.kernel import tree as kernel_tree
from toa_kernel.kernel.modinfo import ModuleInfo

MODULE_HEADER = "toa.h"
MODINFO_KEY = "tcpopt_toa"
HEADER_LIMIT = 1024 * 1024
FIX = (
    "build-module sets the TCP option kind in the module's toa.h ('#define TCPOPT_TOA <number>', "
    "as the vendor's elb-toa has it in src/toa.h): pass that source (--src with its src/ folder, "
    "--tarball, or the default download)"
)


def header_of(moddir: Path) -> Path:
    """The module's ``toa.h``; refused when the source has none."""
    header = moddir / MODULE_HEADER
    if not header.is_file():
        raise UserError(f"the module source {moddir} has no {MODULE_HEADER}: cannot set the option kind", FIX)
    return header


def source_option_code(moddir: Path) -> int | None:
    """The kind the module's ``toa.h`` defines (None: no ``TCPOPT_TOA`` line)."""
    return kernel_tree.read_option_code(read_text(header_of(moddir), limit=HEADER_LIMIT))


def option_code_change(moddir: Path, code: int) -> Change | None:
    """The edit of ``moddir/toa.h`` that sets ``TCPOPT_TOA`` to ``code`` (None: already so)."""
    header_of(moddir)
    return kernel_tree.option_code_change(moddir, code, MODULE_HEADER, FIX)


def set_option_code(moddir: Path, code: int, console: Console) -> dict[str, Any]:
    """Set the kind in the staged source, say so; return ``{"before": N, "after": code}``."""
    before = source_option_code(moddir)
    plan = Plan("build-module")
    plan.add(option_code_change(moddir, code))
    if plan:
        plan.apply(False, echo=console.say)
    else:
        console.say(f"build-module: TCPOPT_TOA is {code} in {MODULE_HEADER} (as the source has it)")
    return {"before": before, "after": code}


def preview_change(moddir: Path, code: int) -> Change:
    """What a build would do to the kind of the source in ``moddir``, changing nothing there."""
    change = option_code_change(moddir, code)
    if change is None:
        return Change(f"keep TCPOPT_TOA {code} in {MODULE_HEADER} (as the source has it)", lambda: None)
    return Change(f"set {change.summary}", lambda: None, diff=change.diff)


def built_kind(info: ModuleInfo) -> int | None:
    """The kind a built module records in its modinfo (None: it does not say)."""
    value = info.get(MODINFO_KEY).strip()
    try:
        return int(value, 0) if value else None
    except ValueError:
        return None


def check_built_kind(info: ModuleInfo, code: int) -> None:
    """Refuse a module whose modinfo records another kind than the one set in toa.h."""
    found = built_kind(info)
    if found is not None and found != code:
        raise UserError(
            f"{info.path.name} records TCP option kind {found} ({MODINFO_KEY}), not {code}: "
            "the source's toa.h was not the one compiled",
            "build again with --force; read the build log for a second toa.h on the include path",
        )
