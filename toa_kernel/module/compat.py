"""Compatibility patches for the vendor's module, chosen by what the kernel headers contain.

The vendor's elb-toa predates the kernels it is built for today. Our own
changes live as unified diffs in ``patches/elb-toa/VERSION/`` (``VERSION`` is
the ``TOA_VERSION`` the source's ``toa.h`` defines: each branch has its own
code, hence its own patches). Every patch starts with a small header that says
when it is needed, in terms of the headers the module is built against, never
a version number::

    Subject: inet_getname() returns the address length
    Requires: include/net/inet_common.h has int inet_getname\\(struct socket \\*sock, [^)]*int peer\\)

``Requires: PATH has REGEX`` holds when a file of the kernel development tree
(the build directory, its ``source``, or the tree its Makefile includes)
matches; ``lacks`` when it exists and does not. All ``Requires`` lines of a
patch must hold; a patch without one (a change every build needs) always applies.
The chosen patches go through the project's patch machinery (GNU patch, no
fuzz, all or nothing) on the staged copy of the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import MODULES_DIR
from toa_kernel.kernel.patching import find_patches, plan_patches
from toa_kernel.source.download import sha256_of
from toa_kernel.system.rootfs import Root

PATCH_SET = "elb-toa"
VERSION_HEADER = "toa.h"
VERSION_RE = re.compile(r'^\s*#\s*define\s+TOA_VERSION\s+"(?P<version>[^"]+)"', re.MULTILINE)
REQUIRES_RE = re.compile(r"^(?P<path>\S+)\s+(?P<verb>has|lacks)\s+(?P<pattern>.+)$")
MAKEFILE_INCLUDE_RE = re.compile(r"^\s*include\s+(?P<path>/\S+)/Makefile\s*$", re.MULTILINE)
HEADER_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Requirement:
    """``PATH has|lacks REGEX`` over a file of the kernel development tree."""

    path: str
    present: bool
    pattern: str

    def describe(self) -> str:
        return f"{self.path} {'has' if self.present else 'lacks'} /{self.pattern}/"


@dataclass(frozen=True)
class CompatPatch:
    path: Path
    subject: str
    requires: tuple[Requirement, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class PatchChoice:
    """One patch and whether these headers need it (with the evidence)."""

    patch: CompatPatch
    applies: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.patch.name,
            "subject": self.patch.subject,
            "applies": self.applies,
            "why": self.why,
            "sha256": sha256_of(self.patch.path),
        }


@dataclass
class HeaderTree:
    """The directories that together make a kernel's development files."""

    dirs: list[Path] = field(default_factory=list)

    def find(self, relative: str) -> Path | None:
        for directory in self.dirs:
            path = directory / relative
            if path.is_file():
                return path
        return None

    def read(self, relative: str) -> str | None:
        path = self.find(relative)
        if path is None:
            return None
        with open(path, errors="replace") as handle:
            return handle.read(HEADER_LIMIT)


def header_tree(root: Root, release: str, kdir: Path) -> HeaderTree:
    """``build``, then ``source`` of ``/lib/modules/R``, then what the build Makefile includes."""
    dirs = [kdir]
    source = root.resolve(f"{MODULES_DIR}/{release}/source")
    if source.is_dir():
        dirs.append(source)
    makefile = kdir / "Makefile"
    text = makefile.read_text(errors="replace") if makefile.is_file() else ""
    dirs.extend(root.resolve(m.group("path")) for m in MAKEFILE_INCLUDE_RE.finditer(text))
    unique: list[Path] = []
    for directory in dirs:
        if directory.is_dir() and directory.resolve() not in [d.resolve() for d in unique]:
            unique.append(directory)
    return HeaderTree(unique)


def parse_patch_header(path: Path) -> CompatPatch:
    """The ``Subject:`` and ``Requires:`` lines before the diff."""
    subject = ""
    requires: list[Requirement] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("--- ", "diff ")):
            break
        key, _, value = line.partition(":")
        if key == "Subject":
            subject = value.strip()
        elif key == "Requires":
            match = REQUIRES_RE.match(value.strip())
            if match is None:
                raise UserError(
                    f"{path}: 'Requires:{value}' is not 'Requires: PATH has|lacks REGEX'",
                    "fix the patch header (see patches/elb-toa/README.md)",
                )
            requires.append(Requirement(match["path"], match["verb"] == "has", match["pattern"].strip()))
    return CompatPatch(path, subject or path.stem, tuple(requires))


def holds(requirement: Requirement, headers: HeaderTree) -> tuple[bool, str]:
    text = headers.read(requirement.path)
    if text is None:
        return False, f"{requirement.path} is not in the headers"
    try:
        found = re.search(requirement.pattern, text, re.MULTILINE) is not None
    except re.error as exc:
        raise UserError(f"bad pattern in 'Requires: {requirement.describe()}': {exc}") from exc
    return found == requirement.present, requirement.describe() + (
        "" if found == requirement.present else ": no"
    )


def choose(patch: CompatPatch, headers: HeaderTree) -> PatchChoice:
    if not patch.requires:
        return PatchChoice(patch, True, "always (no Requires: line)")
    verdicts = [holds(requirement, headers) for requirement in patch.requires]
    applies = all(ok for ok, _ in verdicts)
    return PatchChoice(patch, applies, "; ".join(why for _, why in verdicts))


def source_version(moddir: Path) -> str | None:
    """The module's ``TOA_VERSION`` (which patch directory fits it), if it defines one."""
    path = moddir / VERSION_HEADER
    if not path.is_file():
        return None
    match = VERSION_RE.search(path.read_text(errors="replace"))
    return match.group("version") if match else None


def patch_dir(patches_dir: Path, version: str) -> Path:
    return patches_dir / PATCH_SET / version


def choose_patches(
    patches_dir: Path, moddir: Path, headers: HeaderTree
) -> tuple[str | None, list[PatchChoice]]:
    """The module's version and, for each of its patches, whether these headers need it."""
    version = source_version(moddir)
    if version is None:
        return None, []
    found = find_patches(patch_dir(patches_dir, version))
    return version, [choose(parse_patch_header(path), headers) for path in found]


def apply_choices(moddir: Path, choices: list[PatchChoice]) -> None:
    """Apply the chosen patches to the staged source (all or nothing, no fuzz)."""
    chosen = [choice.patch.path for choice in choices if choice.applies]
    plan_patches(moddir, chosen).plan.apply(False, echo=lambda text: None)
