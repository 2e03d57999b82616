"""Text edits of a kernel source tree, each as a ``Change`` (or None when done).

The pure functions take and return text, so they are tested with data; the
``*_change`` functions read the tree and wrap the result in
``toa_kernel.core.plan.file_edit`` so a dry run shows the unified diff and a second
run finds nothing to do.

- ``net/toa/toa.h``: ``#define TCPOPT_TOA <code>`` (whitespace tolerant).
- top ``Makefile``: ``EXTRAVERSION = -toa``.
- ``net/Makefile``: ``obj-$(CONFIG_TOA) += toa/`` (missing in one public copy).
- ``.config``: fragments merged in place, never duplicating an option.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import read_text
from toa_kernel.core.layout import TOA_HEADER
from toa_kernel.core.plan import Change, file_edit

NET_MAKEFILE = "net/Makefile"
NET_KCONFIG = "net/Kconfig"
TOP_MAKEFILE = "Makefile"
DOT_CONFIG = ".config"
TOA_WIRING_LINE = "obj-$(CONFIG_TOA)\t\t+= toa/\n"
INSTALL_HINT = "unpack the vendor's source again with 'invoke fetch --force'"
# The largest tree file edited here (.config of a distribution kernel: about 100 KiB).
MAX_TREE_FILE = 16 * 1024 * 1024

# `#define TCPOPT_TOA 254`, any blanks, decimal or hex value, optional comment.
OPTION_RE = re.compile(
    r"^(?P<head>[ \t]*#[ \t]*define[ \t]+TCPOPT_TOA[ \t]+)(?P<value>0[xX][0-9a-fA-F]+|\d+)\b",
    re.MULTILINE,
)
EXTRAVERSION_RE = re.compile(
    r"^(?P<head>EXTRAVERSION[ \t]*[:?]?=)(?P<value>[^\n#]*?)(?P<tail>[ \t]*(?:#[^\n]*)?)$", re.MULTILINE
)
WIRING_RE = re.compile(r"^[ \t]*obj-[^\s:+=]*[ \t]*[:+]?=[^\n#]*(?<![\w/.-])toa/", re.MULTILINE)
KCONFIG_SOURCE_RE = re.compile(r"""^[ \t]*source[ \t]+"?net/toa/Kconfig"?[ \t]*$""", re.MULTILINE)
VERSION_LINE_RE = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL)[ \t]*=[ \t]*\d+[ \t]*$", re.MULTILINE)
ASSIGN_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
NOT_SET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")

# A fragment maps CONFIG_X to its value; None means "# CONFIG_X is not set".
Fragment = Mapping[str, Optional[str]]


# --- toa.h -------------------------------------------------------------------


def read_option_code(text: str) -> int | None:
    """The value of ``TCPOPT_TOA`` in ``toa.h`` text, or None when not defined."""
    match = OPTION_RE.search(text)
    return int(match.group("value"), 0) if match else None


def set_option_code(text: str, code: int, header: str = TOA_HEADER, fix: str = "") -> str:
    """``toa.h`` text with every ``#define TCPOPT_TOA`` set to ``code``, blanks kept."""
    if read_option_code(text) is None:
        raise UserError(
            f"{header} has no '#define TCPOPT_TOA <number>' line",
            fix or f"this is not the LVS real-server tree the build expects; {INSTALL_HINT}",
        )
    return OPTION_RE.sub(lambda m: f"{m.group('head')}{code}", text)


def option_code_change(tree: Path, code: int, header: str = TOA_HEADER, fix: str = "") -> Change | None:
    """The edit of ``header`` (``toa.h`` of ``tree``) that sets ``TCPOPT_TOA``; verified after writing.

    ``fix`` replaces the kernel tree's advice in the errors (the module's source has its own)."""
    text = read_tree_file(tree, header)
    old = read_option_code(text)
    new_text = set_option_code(text, code, header, fix)
    change = file_edit(tree / header, new_text, f"toa.h: TCPOPT_TOA {old} -> {code}", label=header)
    if change is not None:
        change.action = verified(change.action, lambda: check_option_code(tree, code, header, fix))
    return change


def check_option_code(tree: Path, code: int, header: str = TOA_HEADER, fix: str = "") -> None:
    """Fail unless ``header`` now defines ``TCPOPT_TOA`` as ``code``."""
    found = read_option_code(read_tree_file(tree, header))
    if found != code:
        raise UserError(
            f"{header} says TCPOPT_TOA {found} after the edit, not {code}",
            f"check the file by hand; {fix or INSTALL_HINT}",
        )


# --- top Makefile ------------------------------------------------------------


def read_extraversion(text: str) -> str | None:
    """The ``EXTRAVERSION`` value of the top Makefile, or None when there is no such line."""
    match = EXTRAVERSION_RE.search(text)
    return match.group("value").strip() if match else None


def set_extraversion(text: str, extraversion: str) -> str:
    """Makefile text whose first ``EXTRAVERSION =`` line holds ``extraversion``."""
    match = EXTRAVERSION_RE.search(text)
    if match is None:
        raise UserError(
            "the top Makefile has no 'EXTRAVERSION =' line",
            f"a 2.6.32 Makefile starts with VERSION, PATCHLEVEL, SUBLEVEL, EXTRAVERSION; {INSTALL_HINT}",
        )
    if match.group("value").strip() == extraversion:
        return text
    line = f"{match.group('head')} {extraversion}" if extraversion else match.group("head")
    tail = match.group("tail").strip()
    return text[: match.start()] + line + (f" {tail}" if tail else "") + text[match.end() :]


def extraversion_change(tree: Path, extraversion: str) -> Change | None:
    """The edit of the top Makefile that sets ``EXTRAVERSION``."""
    text = read_tree_file(tree, TOP_MAKEFILE)
    old = read_extraversion(text)
    new_text = set_extraversion(text, extraversion)
    summary = f"Makefile: EXTRAVERSION {old or '(empty)'!s} -> {extraversion or '(empty)'}"
    return file_edit(tree / TOP_MAKEFILE, new_text, summary, label=TOP_MAKEFILE)


# --- net/Makefile and net/Kconfig ---------------------------------------------


def has_toa_wiring(text: str) -> bool:
    """True when ``net/Makefile`` descends into ``toa/``."""
    return WIRING_RE.search(text) is not None


def add_toa_wiring(text: str) -> str:
    """``net/Makefile`` text that descends into ``toa/`` (unchanged when it already does)."""
    if has_toa_wiring(text):
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + TOA_WIRING_LINE


def wiring_change(tree: Path) -> Change | None:
    """Add ``obj-$(CONFIG_TOA) += toa/`` to ``net/Makefile`` when it is missing."""
    text = read_tree_file(tree, NET_MAKEFILE)
    new_text = add_toa_wiring(text)
    summary = "net/Makefile: add 'obj-$(CONFIG_TOA) += toa/' (without it make never builds toa.ko)"
    return file_edit(tree / NET_MAKEFILE, new_text, summary, label=NET_MAKEFILE)


def sources_toa_kconfig(text: str) -> bool:
    """True when ``net/Kconfig`` has ``source "net/toa/Kconfig"``."""
    return KCONFIG_SOURCE_RE.search(text) is not None


def is_kernel_makefile(text: str) -> bool:
    """True when a top Makefile has the VERSION, PATCHLEVEL and SUBLEVEL lines."""
    return {m.group(1) for m in VERSION_LINE_RE.finditer(text)} == {"VERSION", "PATCHLEVEL", "SUBLEVEL"}


# --- .config fragments --------------------------------------------------------


def parse_fragment(text: str, name: str = "fragment") -> dict[str, str | None]:
    """``CONFIG_X=v`` and ``# CONFIG_X is not set`` lines; comments and blanks skipped."""
    values: dict[str, str | None] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        assignment = config_assignment(line)
        if assignment:
            values[assignment[0]] = assignment[1]
        elif not line.startswith("#"):
            raise UserError(
                f"{name}:{number}: {raw!r} is not a kernel config line",
                "write 'CONFIG_NAME=value' or '# CONFIG_NAME is not set', one per line",
            )
    return values


def config_line(option: str, value: str | None) -> str:
    """The ``.config`` line for one option."""
    return f"# {option} is not set" if value is None else f"{option}={value}"


def config_values(text: str) -> dict[str, str | None]:
    """Every option a ``.config`` sets (last line wins, as kconfig reads it)."""
    return dict(filter(None, map(config_assignment, text.splitlines())))


def config_assignment(line: str) -> tuple[str, str | None] | None:
    """``CONFIG_X=v`` -> (CONFIG_X, v); ``# CONFIG_X is not set`` -> (CONFIG_X, None)."""
    assign = ASSIGN_RE.match(line)
    if assign:
        return assign.group(1), assign.group(2)
    not_set = NOT_SET_RE.match(line)
    return (not_set.group(1), None) if not_set else None


def line_option(line: str) -> str | None:
    """The option a ``.config`` line sets, if any."""
    match = ASSIGN_RE.match(line) or NOT_SET_RE.match(line.rstrip("\n"))
    return match.group(1) if match else None


@dataclass(frozen=True)
class ConfigEdit:
    """One option's change in a merge: ``old`` is None-able, ``present`` says it was there."""

    option: str
    old: str | None
    new: str | None
    present: bool

    def describe(self) -> str:
        new = "not set" if self.new is None else self.new
        if not self.present:
            return f"{self.option} added ({new})"
        old = "not set" if self.old is None else self.old
        return f"{self.option} {old} -> {new}"


def merge_config(text: str, fragment: Fragment) -> tuple[str, list[ConfigEdit]]:
    """Merge ``fragment`` into ``.config`` text in place.

    An option's first line (assignment or ``is not set``) is replaced, its later
    duplicates are removed and an absent option is appended: never duplicated.
    Returns the new text and the edits made (empty when nothing differs).
    """
    lines = text.splitlines(keepends=True)
    current = config_values(text)
    out: list[str] = []
    seen: set[str] = set()
    for line in lines:
        option = line_option(line.rstrip("\n"))
        if option is None or option not in fragment:
            out.append(line)
        elif option not in seen:
            seen.add(option)
            out.append(config_line(option, fragment[option]) + "\n")
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out.extend(config_line(option, value) + "\n" for option, value in fragment.items() if option not in seen)
    new_text = "".join(out)
    if new_text == text:
        return text, []
    edits = [
        ConfigEdit(option, current.get(option), value, option in current)
        for option, value in fragment.items()
        if option not in current or current[option] != value
    ]
    return new_text, edits


def config_change(
    tree: Path, fragment: Fragment, before: Callable[[], object] | None = None
) -> tuple[Change | None, list[ConfigEdit]]:
    """The in-place merge of ``fragment`` into the tree's ``.config``."""
    text = read_tree_file(tree, DOT_CONFIG)
    new_text, edits = merge_config(text, fragment)
    described = ", ".join(edit.describe() for edit in edits) or "duplicate lines removed"
    change = file_edit(tree / DOT_CONFIG, new_text, f".config: {described}", label=DOT_CONFIG, before=before)
    return change, edits


def lost_values(config_text: str, fragment: Fragment) -> list[tuple[str, str | None, str | None]]:
    """Fragment options whose value is not in ``.config``: (option, wanted, found)."""
    found = config_values(config_text)
    lost = []
    for option, wanted in fragment.items():
        got = found.get(option)
        if wanted in (None, "n") and got in (None, "n"):
            continue
        if got != wanted:
            lost.append((option, wanted, got))
    return lost


# --- helpers ------------------------------------------------------------------


def read_tree_file(tree: Path, relative: str) -> str:
    """A text file of the tree, byte for byte (``fileops.read_text``); a clear error when it
    is missing or not a file."""
    path = tree / relative
    try:
        return read_text(path, limit=MAX_TREE_FILE)
    except FileNotFoundError:
        raise UserError(
            f"{relative} is missing from the kernel tree {tree}",
            f"the tree is incomplete or not the LVS real-server source; {INSTALL_HINT}",
        ) from None
    except UserError as exc:
        raise UserError(f"{exc.message} (expected the tree's {relative})", INSTALL_HINT) from None


def kernel_version(makefile_text: str) -> str | None:
    """VERSION.PATCHLEVEL.SUBLEVEL of a top Makefile (None when a line is missing)."""
    found = {m.group(1): m.group(0).split("=", 1)[1].strip() for m in VERSION_LINE_RE.finditer(makefile_text)}
    if set(found) != {"VERSION", "PATCHLEVEL", "SUBLEVEL"}:
        return None
    return f"{found['VERSION']}.{found['PATCHLEVEL']}.{found['SUBLEVEL']}"


def verified(action: Callable[[], object], check: Callable[[], None]) -> Callable[[], None]:
    """An action followed by a check of its result."""

    def run() -> None:
        action()
        check()

    return run
