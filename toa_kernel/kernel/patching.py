"""Apply ``patches/*.patch`` to a kernel tree with GNU patch, all or nothing.

The patches are tried in file-name order on a *scratch copy* of the files they
touch, so a later patch may depend on an earlier one and a patch that does not
apply leaves the real tree untouched (its rejected hunk is shown). For each patch:

1. the patches already in the tree are found by reverting them, last first, on
   a copy (detected, not guessed: the tree holds exactly what they produce);
   they are skipped;
2. each remaining one must apply (``patch --forward``, no fuzz, as rpm builds
   kernels) on the copy, after the ones before it, or the whole step stops.

The result is a ``Plan`` with one ``Change`` per patch to apply; its diff is the
real difference it makes to the tree, and applying it writes the files
atomically.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from toa_kernel.core.errors import ToolMissing, UserError
from toa_kernel.core.fileops import atomic_write
from toa_kernel.core.plan import Change, Plan, unified_diff
from toa_kernel.source.download import sha256_of

PATCH_FLAGS = ("-p1", "--fuzz=0", "--no-backup-if-mismatch", "--force")
YUM_PATCH = "install it with 'yum install patch' (CentOS 6) or 'apt-get install patch'"


@dataclass
class PatchOutcome:
    """What happened to one patch: ``applied``, ``already applied`` or ``would apply``."""

    name: str
    path: Path
    sha256: str
    status: str
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "status": self.status, "files": self.files}


@dataclass
class PatchPlan:
    """The patches found, what each one needs, and the plan that applies them."""

    plan: Plan
    outcomes: list[PatchOutcome]


class PatchRejected(UserError):
    """A patch does not apply to the tree; carries patch's output and the rejected hunks."""

    def __init__(self, name: str, output: str, rejects: str) -> None:
        shown = (rejects or output).rstrip()
        super().__init__(
            f"patch {name} does not apply to the tree (nothing was changed):\n{shown}",
            f"refresh {name} against this tree (diff -u, paths a/... b/...), or remove it from patches/",
        )
        self.output = output
        self.rejects = rejects


def find_patches(patches_dir: Path) -> list[Path]:
    """``*.patch`` files of ``patches_dir`` in name order (none when it does not exist)."""
    if not patches_dir.is_dir():
        return []
    return sorted(p for p in patches_dir.glob("*.patch") if p.is_file())


def touched_files(patch_text: str, strip: int = 1) -> list[str]:
    """Tree-relative paths a unified diff names in its ``---``/``+++`` headers."""
    found: list[str] = []
    for line in patch_text.splitlines():
        if not (line.startswith("--- ") or line.startswith("+++ ")):
            continue
        name = line[4:].split("\t")[0].strip()
        if name == "/dev/null" or not name:
            continue
        parts = PurePosixPath(name).parts[strip:]
        if not parts or ".." in parts:
            continue
        relative = str(PurePosixPath(*parts))
        if relative not in found:
            found.append(relative)
    return found


def run_patch(scratch: Path, patch: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run GNU patch in ``scratch`` with the project's flags."""
    argv = ["patch", *PATCH_FLAGS, *extra, "-d", str(scratch), "-i", str(patch.resolve())]
    env = {**os.environ, "LC_ALL": "C"}
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ToolMissing("patch", YUM_PATCH) from None


def snapshot(root: Path, files: list[str]) -> dict[str, bytes | None]:
    """Content of ``files`` under ``root`` (None for a missing file)."""
    out: dict[str, bytes | None] = {}
    for relative in files:
        path = root / relative
        out[relative] = path.read_bytes() if path.is_file() else None
    return out


def copy_into(tree: Path, scratch: Path, files: list[str]) -> None:
    """Copy ``files`` of the tree (those that exist) into the scratch directory."""
    for relative in files:
        source = tree / relative
        if source.is_file():
            target = scratch / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def plan_patches(tree: Path, patches: list[Path], scratch_parent: Path | None = None) -> PatchPlan:
    """Work out which patches apply, on scratch copies; the tree is not touched."""
    plan = Plan("patch")
    outcomes: list[PatchOutcome] = []
    if not patches:
        return PatchPlan(plan, outcomes)
    if shutil.which("patch") is None:
        raise ToolMissing("patch", YUM_PATCH)
    files = {p: touched_files(p.read_text(errors="surrogateescape")) for p in patches}
    every_file = list(dict.fromkeys(f for p in patches for f in files[p]))
    done = applied_prefix(tree, patches, every_file, scratch_parent)
    for patch in patches:
        outcomes.append(PatchOutcome(patch.name, patch, sha256_of(patch), "already applied", files[patch]))
    with scratch_copy(tree, every_file, scratch_parent) as scratch:
        for outcome in outcomes[done:]:
            before = snapshot(scratch, outcome.files)
            reject = scratch / ".toa-rejected-hunks"
            result = run_patch(scratch, outcome.path, "--forward", f"--reject-file={reject}")
            if result.returncode != 0:
                rejects = reject.read_text(errors="replace") if reject.exists() else ""
                raise PatchRejected(outcome.name, result.stdout + result.stderr, rejects)
            outcome.status = "would apply"
            plan.add(patch_change(tree, outcome, before, snapshot(scratch, outcome.files)))
    return PatchPlan(plan, outcomes)


def applied_prefix(tree: Path, patches: list[Path], files: list[str], scratch_parent: Path | None) -> int:
    """How many of the first patches the tree already holds.

    ``k`` patches are applied when reverting patches k-1 .. 0, one after the
    other, succeeds on a copy of the tree: a later patch may change lines an
    earlier one added, so each patch cannot be tested alone.
    """
    for count in range(len(patches), 0, -1):
        with scratch_copy(tree, files, scratch_parent) as scratch:
            if all(run_patch(scratch, p, "--reverse").returncode == 0 for p in reversed(patches[:count])):
                return count
    return 0


@contextlib.contextmanager
def scratch_copy(tree: Path, files: list[str], parent: Path | None) -> Iterator[Path]:
    """A temporary directory holding copies of ``files`` of the tree."""
    with tempfile.TemporaryDirectory(prefix="toa-patch-", dir=parent) as tmp:
        copy_into(tree, Path(tmp), files)
        yield Path(tmp)


def patch_change(
    tree: Path, outcome: PatchOutcome, before: dict[str, bytes | None], after: dict[str, bytes | None]
) -> Change:
    """A change that writes the files ``outcome``'s patch produces."""
    diff = "".join(
        unified_diff(
            (before[f] or b"").decode(errors="replace"), (after[f] or b"").decode(errors="replace"), f
        )
        for f in outcome.files
        if before[f] != after[f]
    )

    def write() -> None:
        for relative, content in after.items():
            path = tree / relative
            if content is None:
                if path.exists():
                    path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, content)
        outcome.status = "applied"

    command = ["patch", *PATCH_FLAGS, "--forward", "-i", str(outcome.path)]
    summary = f"apply {outcome.name} ({', '.join(outcome.files)})"
    return Change(summary=summary, action=write, diff=diff, command=command)
