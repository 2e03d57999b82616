"""The build host's toolchain, and the compatibility set for one newer than the tree.

The 2.6.32 tree was written for gcc 4.4, binutils 2.20, make 3.81, perl 5.10
and bash as ``/bin/sh`` (CentOS 6). A newer toolchain (Debian 12: gcc 12,
binutils 2.40, make 4.3, perl 5.36, dash) needs a short list of changes, each
measured: the patches in ``patches/toolchain/`` and one make variable. Each
patch names, in its header, the toolchain it is for::

    Subject: what it changes
    When: gcc >= 5            (or binutils, make, perl; or a feature below)
    Symptom: what goes wrong without it

Features: ``gcc-default-pie`` (gcc builds position-independent code unless told
otherwise), ``sh-echo-escapes`` (``/bin/sh``'s echo turns ``\\1`` into a
control character, as dash's does) and ``no-v4l1-header`` (the host's kernel
headers, which the documentation's example programs build against, lack
``linux/videodev.h``). A patch is applied only when its condition
holds on this host, and the set only to a Kbuild tree (one with
``scripts/Kbuild.include``): a CentOS 6 server with its own gcc 4.4 gets none.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.core.errors import UserError

COMPAT_DIR = "toolchain"
KBUILD_INCLUDE = "scripts/Kbuild.include"
TOOLS = ("gcc", "binutils", "make", "perl")
FEATURES = {
    "gcc-default-pie": "gcc builds position-independent code by default",
    "sh-echo-escapes": "/bin/sh's echo interprets backslash escapes (dash)",
    "no-v4l1-header": "the host's kernel headers lack linux/videodev.h (V4L1, gone since 2.6.38)",
}
# The make variable for a PIE-by-default gcc: -fno-PIE must reach every compile,
# arch/x86/boot's own flags and the Makefile's compiler probes too, so it goes into CC.
NO_PIE = "-fno-PIE"
WHEN_RE = re.compile(r"^(?P<tool>[a-z]+)\s*>=\s*(?P<version>\d+(?:\.\d+)*)$")
VERSION_RE = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?:\.(\d+))?")
HEADER_RE = re.compile(r"^(?P<key>Subject|When|Symptom):\s*(?P<value>.*\S)\s*$", re.MULTILINE)
Version = tuple[int, ...]


@dataclass(frozen=True)
class Toolchain:
    """Versions of the build tools (None: not found) and the features that matter."""

    versions: dict[str, Version | None]
    features: frozenset[str] = frozenset()
    descriptions: dict[str, str] = field(default_factory=dict)

    def version_text(self, tool: str) -> str:
        version = self.versions.get(tool)
        return ".".join(map(str, version)) if version else "not found"

    def holds(self, when: str) -> bool:
        """True when the condition of a ``When:`` line holds for this toolchain."""
        if when in FEATURES:
            return when in self.features
        match = WHEN_RE.match(when)
        if match is None or match.group("tool") not in TOOLS:
            raise UserError(
                f"unknown toolchain condition {when!r}",
                f"write 'TOOL >= VERSION' (TOOL: {', '.join(TOOLS)}) or a feature: {', '.join(FEATURES)}",
            )
        have = self.versions.get(match.group("tool"))
        wanted = tuple(int(part) for part in match.group("version").split("."))
        return have is not None and have >= wanted

    def describe(self, when: str) -> str:
        """Why a condition holds, for the build output: ``gcc 12.2.0 (>= 5)``."""
        if when in FEATURES:
            return FEATURES[when]
        tool, _, version = when.partition(">=")
        return f"{tool.strip()} {self.version_text(tool.strip())} (>= {version.strip()})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "versions": {tool: self.version_text(tool) for tool in TOOLS},
            "features": sorted(self.features),
            "tools": self.descriptions,
        }


def parse_version(text: str) -> Version:
    """``"12.2.0"`` -> (12, 2, 0); the first dotted number in ``text``."""
    match = VERSION_RE.search(text)
    if match is None:
        raise ValueError(f"no version number in {text!r}")
    return tuple(int(part) for part in match.groups() if part is not None)


def first_version(text: str) -> Version | None:
    try:
        return parse_version(text)
    except ValueError:
        return None


def run_quietly(argv: list[str], stdin: str = "") -> str | None:
    """stdout of a short command, or None when it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def first_line(text: str | None) -> str:
    return text.splitlines()[0].strip() if text and text.strip() else "not found"


Asker = Callable[[list[str], str], "str | None"]


def detect(ask: Asker = run_quietly) -> Toolchain:
    """Ask the build host's gcc, ld, make, perl and /bin/sh what they are.

    ``ask(argv, stdin)`` runs a short command where the compile will run
    (this machine by default, the build host of ``build --host``): its stdout, or
    None when the command is missing or fails.
    """
    outputs = {
        "gcc": ask(["gcc", "--version"], ""),
        "ld": ask(["ld", "--version"], ""),
        "make": ask(["make", "--version"], ""),
    }
    perl = ask(["perl", "-e", 'printf "%vd\\n", $^V'], "")
    versions = {
        "gcc": first_version(first_line(outputs["gcc"])),
        "binutils": first_version(first_line(outputs["ld"])),
        "make": first_version(first_line(outputs["make"])),
        "perl": first_version(perl or ""),
    }
    features = set()
    if "__PIE__" in (ask(["gcc", "-dM", "-E", "-x", "c", "-"], "") or ""):
        features.add("gcc-default-pie")
    if (ask(["sh", "-c", "echo 'x\\101'"], "") or "").strip() == "xA":
        features.add("sh-echo-escapes")
    if outputs["gcc"] and ask(["gcc", "-E", "-x", "c", "-"], "#include <linux/videodev.h>\n") is None:
        features.add("no-v4l1-header")
    descriptions = {tool: first_line(text) for tool, text in outputs.items()}
    descriptions["perl"] = f"perl {first_line(perl)}"
    return Toolchain(versions, frozenset(features), descriptions)


# --- the compatibility set ------------------------------------------------------------


@dataclass(frozen=True)
class CompatPatch:
    """One patch of the set with what its header says."""

    path: Path
    subject: str
    when: str
    symptom: str

    @property
    def name(self) -> str:
        return self.path.name


def read_compat_patch(path: Path) -> CompatPatch:
    """A patch's ``Subject``, ``When`` and ``Symptom`` header lines (``When`` required)."""
    text = path.read_text(errors="replace")
    head = text.split("\n--- ", 1)[0]
    fields = {m.group("key"): m.group("value") for m in HEADER_RE.finditer(head)}
    if "When" not in fields:
        raise UserError(
            f"toolchain patch {path} has no 'When:' line",
            "start it with 'When: gcc >= 5' (or binutils/make/perl, or a feature) before the diff",
        )
    return CompatPatch(path, fields.get("Subject", path.stem), fields["When"], fields.get("Symptom", ""))


@dataclass
class Compat:
    """What the build does for this toolchain on this tree."""

    toolchain: Toolchain
    kbuild_tree: bool
    patches: list[CompatPatch] = field(default_factory=list)
    not_needed: list[CompatPatch] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return bool(self.patches or self.variables)

    def banner(self) -> list[str]:
        """The loud lines the build prints when the set is used."""
        if not self.needed:
            return []
        parts = [f"{len(self.patches)} patches from patches/{COMPAT_DIR}/"]
        parts += [f"{name}={value!r}" for name, value in self.variables.items()]
        return [
            "TOOLCHAIN NEWER THAN THIS 2.6.32 TREE SUPPORTS: " + "; ".join(self.reasons),
            "applying the toolchain compatibility set: " + ", ".join(parts),
            "a CentOS 6 server building with its own gcc 4.4 needs none of it",
        ]

    def summary(self) -> str:
        if not self.kbuild_tree:
            return f"not applicable (no {KBUILD_INCLUDE}: not a Kbuild tree)"
        if not self.needed:
            return "the tree's own toolchain generation: no compatibility changes"
        variables = " ".join(f"{k}={v!r}" for k, v in self.variables.items())
        return f"compatibility set: {len(self.patches)} patches {variables}".rstrip()

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.toolchain.as_dict(),
            "kbuild_tree": self.kbuild_tree,
            "compat_needed": self.needed,
            "newer_than_tree": self.reasons,
            "patches": [{"name": p.name, "when": p.when, "subject": p.subject} for p in self.patches],
            "not_needed": [{"name": p.name, "when": p.when} for p in self.not_needed],
            "make_variables": self.variables,
        }


def compat_patches(directory: Path) -> list[CompatPatch]:
    """The set's patches in name order (none when the directory does not exist)."""
    if not directory.is_dir():
        return []
    return [read_compat_patch(p) for p in sorted(directory.glob("*.patch")) if p.is_file()]


def plan_compat(tree: Path, directory: Path, toolchain: Toolchain) -> Compat:
    """Choose the patches and make variables this toolchain needs for ``tree``."""
    compat = Compat(toolchain, kbuild_tree=(tree / KBUILD_INCLUDE).is_file())
    if not compat.kbuild_tree:
        return compat
    for patch in compat_patches(directory):
        (compat.patches if toolchain.holds(patch.when) else compat.not_needed).append(patch)
    if "gcc-default-pie" in toolchain.features:
        compat.variables["CC"] = f"gcc {NO_PIE}"
    conditions = [p.when for p in compat.patches]
    if compat.variables:
        conditions.append("gcc-default-pie")
    compat.reasons = unique(toolchain.describe(when) for when in conditions)
    return compat


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def cc_variable(compat: Compat | None, ccache: bool) -> str | None:
    """The ``CC=`` make argument: ccache and -fno-PIE as needed; None for make's default."""
    compiler = (compat.variables.get("CC") if compat else None) or ("gcc" if ccache else None)
    if compiler is None:
        return None
    return f"CC={'ccache ' if ccache else ''}{compiler}"
