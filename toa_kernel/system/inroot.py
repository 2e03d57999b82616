"""Symlink resolution inside a root prefix, from a link oracle (for remote systems).

``Root.resolve`` walks local paths one ``os.readlink`` at a time. Over SSH one
question per component would cost a round trip each, so this walker asks about
every remaining prefix at once (``find_link``: the first of these paths that is a
symlink, and its target) and costs one round trip plus one per link followed.
The rules are ``Root.resolve``'s: an absolute target restarts at the root, a
relative one at the link's directory, and ``..`` stops at the root.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Callable, Optional

from toa_kernel.core.errors import UserError

MAX_LINKS = 40
LinkOracle = Callable[[list[str]], Optional[tuple[int, str]]]


def resolve_inside(system_path: str, find_link: LinkOracle) -> str:
    """``system_path`` with its symlinks followed; ``find_link`` sees system paths."""
    done = PurePosixPath("/")
    parts = list(PurePosixPath(system_path).relative_to("/").parts)
    hops = 0
    while parts:
        part = parts[0]
        if part in (".", ""):
            parts.pop(0)
            continue
        if part == "..":
            parts.pop(0)
            done = done.parent
            continue
        run = plain_run(parts)
        candidates = [str(done.joinpath(*run[: i + 1])) for i in range(len(run))]
        hit = find_link(candidates)
        if hit is None:
            done = done.joinpath(*run)
            del parts[: len(run)]
            continue
        index, target = hit
        hops += 1
        if hops > MAX_LINKS:
            raise UserError(
                f"{system_path} cannot be resolved: the symbolic links at {candidates[index]} form a loop "
                f"(more than {MAX_LINKS} links)",
                f"look at the links with 'ls -l {candidates[index]}' and point one of them at a real file",
            )
        link_dir = done.joinpath(*run[:index])
        rest = parts[index + 1 :]
        target_path = PurePosixPath(target)
        if target_path.is_absolute():
            done, parts = PurePosixPath("/"), [*target_path.relative_to("/").parts, *rest]
        else:
            done, parts = link_dir, [*target_path.parts, *rest]
    return str(done)


def plain_run(parts: list[str]) -> list[str]:
    """The leading components before the next ``.`` or ``..`` (resolved one by one)."""
    run = []
    for part in parts:
        if part in (".", "..", ""):
            break
        run.append(part)
    return run
