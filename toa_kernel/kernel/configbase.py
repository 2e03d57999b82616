"""Which ``.config`` the build starts from: the tree's own, or the small lab base.

``tree`` (the default, for servers): the ``.config`` the vendor ships, with the
fragments of ``configs/*.config`` merged in.

``lab``: ``make x86_64_defconfig`` (the tree's own defconfig), then
``configs/lab/*.config`` and the same ``configs/*.config`` fragments (these
win). It builds in minutes instead of half an hour and boots under QEMU. The
tree's own ``.config`` is kept as ``.config.toa-tree`` while the lab base is in
use and put back when the build is switched back to ``tree``; ``.toa-config-base``
in the tree records which base ``.config`` was made from, so a second run with
the same base changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from toa_kernel.core.errors import UserError
from toa_kernel.core.fileops import atomic_write, read_text
from toa_kernel.core.plan import Change, Plan
from toa_kernel.kernel import tree as kernel_tree
from toa_kernel.source.download import sha256_of

TREE = "tree"
LAB = "lab"
MARKER = ".toa-config-base"
TREE_CONFIG_COPY = ".config.toa-tree"
DEFCONFIG = "x86_64_defconfig"
DEFCONFIG_FILE = f"arch/x86/configs/{DEFCONFIG}"
LAB_DIR = "lab"
FIRST_FRAGMENT = "toa.config"

Fragment = dict[str, "str | None"]


def current_base(tree: Path) -> str:
    """The base the tree's ``.config`` was made from (``tree`` unless the marker says otherwise)."""
    try:
        words = (tree / MARKER).read_text().split()
    except OSError:
        return TREE
    return words[0] if words else TREE


def fragment_files(directory: Path) -> list[Path]:
    """``*.config`` of a directory in name order, ``toa.config`` first."""
    files = sorted(directory.glob("*.config")) if directory.is_dir() else []
    files.sort(key=lambda p: p.name != FIRST_FRAGMENT)
    return files


def read_fragments(files: Sequence[Path]) -> tuple[Fragment, list[dict[str, str]]]:
    """The options the files set (later files win) and each file's path and sha256."""
    values: Fragment = {}
    recorded = []
    for path in files:
        values.update(kernel_tree.parse_fragment(read_text(path), str(path)))
        recorded.append({"path": str(path), "sha256": sha256_of(path)})
    return values, recorded


def fragments_for(configs_dir: Path, base: str) -> tuple[Fragment, list[dict[str, str]]]:
    """The fragments a build merges: for ``lab``, ``configs/lab/`` first, then ``configs/``."""
    production = fragment_files(configs_dir)
    if not production:
        raise UserError(
            f"no config fragments (*.config) in {configs_dir}",
            "restore configs/toa.config (CONFIG_IPV6=y, CONFIG_TOA=m) or point toa.configs_dir at one",
        )
    lab = fragment_files(configs_dir / LAB_DIR) if base == LAB else []
    if base == LAB and not lab:
        raise UserError(
            f"no lab config fragments (*.config) in {configs_dir / LAB_DIR}",
            "restore configs/lab/lab.config, or build with --config-base tree",
        )
    return read_fragments([*lab, *production])


def base_plan(tree: Path, base: str, run_make: Callable[[Sequence[str]], object]) -> Plan:
    """The changes that put the tree's ``.config`` on ``base`` (empty when it is there)."""
    plan = Plan("configure")
    have = current_base(tree)
    if base == have:
        return plan
    if base == LAB:
        if not (tree / DEFCONFIG_FILE).is_file():
            raise UserError(
                f"{tree} has no {DEFCONFIG_FILE}, the start of the lab config",
                "build this tree with --config-base tree (its own .config)",
            )
        plan.add(keep_tree_config(tree))
        plan.add(
            Change(
                summary=f"start .config from the lab base: make {DEFCONFIG}, then configs/{LAB_DIR}/*.config",
                action=lambda: lab_config(tree, run_make),
                command=["make", DEFCONFIG],
            )
        )
        return plan
    plan.add(restore_tree_config(tree))
    return plan


def keep_tree_config(tree: Path) -> Change | None:
    """Copy the tree's own ``.config`` aside (once: the copy is always the tree's own)."""
    if (tree / TREE_CONFIG_COPY).exists():
        return None
    dot_config = tree / kernel_tree.DOT_CONFIG

    def copy() -> None:
        atomic_write(tree / TREE_CONFIG_COPY, dot_config.read_bytes())

    return Change(summary=f"keep the tree's own .config as {TREE_CONFIG_COPY}", action=copy)


def lab_config(tree: Path, run_make: Callable[[Sequence[str]], object]) -> None:
    run_make([DEFCONFIG])
    atomic_write(tree / MARKER, f"{LAB}\n")


def restore_tree_config(tree: Path) -> Change:
    """Put the tree's own ``.config`` back after lab builds."""
    copy = tree / TREE_CONFIG_COPY
    if not copy.is_file():
        raise UserError(
            f"{tree}/.config was made from the lab base and the tree's own ({TREE_CONFIG_COPY}) is gone",
            "unpack the source again with 'invoke fetch --force', or build with --config-base lab",
        )

    def restore() -> None:
        os.replace(copy, tree / kernel_tree.DOT_CONFIG)
        os.utime(tree / kernel_tree.DOT_CONFIG)  # newer than include/config/auto.conf: kconfig runs
        (tree / MARKER).unlink()

    return Change(summary=f"put the tree's own .config back from {TREE_CONFIG_COPY}", action=restore)
