"""Paths under a root prefix (like DESTDIR or ``rpm --root``).

Every path of the target system (``/boot``, ``/etc``, ``/lib/modules``, ``/proc``)
is resolved through ``Root.path`` so that tests run the production code path
against a sandbox directory. Nothing else joins system paths by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from toa_kernel.core.errors import UserError


@dataclass(frozen=True)
class Root:
    """A root prefix; ``Root("/")`` is the live system."""

    base: Path

    @classmethod
    def of(cls, root: str | os.PathLike[str] | None) -> Root:
        """Build a Root from a ``--root`` value, checking that it is a directory."""
        base = Path(root or "/").expanduser()
        if not base.is_dir():
            raise UserError(
                f"root directory {str(base)!r} does not exist or is not a directory",
                "pass --root with an existing directory (default /)",
            )
        return cls(base.resolve())

    @property
    def is_live(self) -> bool:
        """True when this root is the running system's ``/``."""
        return self.base == Path("/")

    def path(self, system_path: str | PurePosixPath) -> Path:
        """Map an absolute system path (``/boot/grub/grub.conf``) under the root."""
        text = str(system_path)
        if not text.startswith("/"):
            raise ValueError(f"system path must be absolute: {text!r}")
        relative = PurePosixPath(text).relative_to("/")
        if ".." in relative.parts:
            raise ValueError(f"system path must not contain '..': {text!r}")
        return self.base.joinpath(*relative.parts)

    def system_path(self, path: Path) -> str:
        """The inverse of ``path``: ``ROOT/etc/x`` -> ``/etc/x``."""
        relative = Path(path).relative_to(self.base)
        return "/" + relative.as_posix() if relative.parts else "/"

    def resolve(self, system_path: str, hint: str = "") -> Path:
        """Resolve symlinks of ``system_path`` *inside* the root.

        Absolute link targets are taken relative to the root (as a chroot would),
        so ``ROOT/etc/grub.conf -> ../boot/grub/grub.conf`` and
        ``-> /boot/grub/grub.conf`` both land on ``ROOT/boot/grub/grub.conf``.
        A loop of links is a UserError whose fix is ``hint`` (or a generic one).
        """
        parts = list(PurePosixPath(system_path).relative_to("/").parts)
        current = PurePosixPath("/")
        hops = 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                current = current.parent
                continue
            candidate = current / part
            host = self.path(str(candidate))
            if host.is_symlink():
                hops += 1
                if hops > 40:
                    raise UserError(
                        f"{system_path} under {self.base} cannot be resolved: the symbolic links at "
                        f"{candidate} form a loop (more than 40 links)",
                        hint or f"look at the links with 'ls -l {host}' and point one of them at a real file",
                    )
                target = PurePosixPath(os.readlink(host))
                if target.is_absolute():
                    current = PurePosixPath("/")
                    parts = list(target.relative_to("/").parts) + parts
                else:
                    parts = list(target.parts) + parts
                continue
            current = candidate
        return self.path(str(current))
