"""Helpers for the build tests: sample trees in a work directory, tree digests, patches."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from conftest import PROJECT_DIR

from toa_kernel.core.console import Console
from toa_kernel.core.plan import unified_diff
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir
from toa_kernel.demo.sample import write_sample_tree

TOA_C = "net/toa/toa.c"


def tree_digest(tree: Path) -> dict[str, str]:
    """sha256 of every regular file of a tree, by relative path."""
    return {
        str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(tree.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def make_patch(directory: Path, name: str, edits: dict[str, tuple[str, str]]) -> Path:
    """A -p1 unified diff: path -> (old text, new text); '' old means a new file, '' new a deletion."""
    directory.mkdir(parents=True, exist_ok=True)
    text = ""
    for path, (old, new) in edits.items():
        diff = unified_diff(old, new, path)
        if not old:
            diff = diff.replace(f"--- a/{path}", "--- /dev/null", 1)
        if not new:
            diff = diff.replace(f"+++ b/{path}", "+++ /dev/null", 1)
        text += diff
    patch = directory / name
    patch.write_text(text)
    return patch


def build_settings(tmp_path: Path, **changes: object) -> Settings:
    """Settings for a build in ``tmp_path/work`` with the project's configs and no patches."""
    values: dict[str, object] = {
        "workdir": tmp_path / "work",
        "project_dir": PROJECT_DIR,
        "patches_dir": tmp_path / "patches",
        "configs_dir": PROJECT_DIR / "configs",
        "jobs": 2,
        "min_free_gib": 0.01,
    }
    values.update(changes)
    return Settings.from_config(None, **values)


def fetched_tree(settings: Settings, variant: str = "vendor") -> Path:
    """A sample tree in the work directory, recorded in the manifest as 'invoke fetch' does."""
    workdir = Workdir(Path(settings.workdir)).ensure()
    tree = write_sample_tree(workdir.src, variant)
    workdir.update_manifest("fetch", {"tree": str(tree), "sha256": "0" * 64, "url": "file:///sample"})
    return tree


def quiet_console() -> tuple[Console, io.StringIO]:
    """A console whose messages go to a buffer the test can read."""
    buffer = io.StringIO()
    return Console(stream=buffer), buffer
