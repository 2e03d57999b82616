"""Typed settings read from invoke's config.

Defaults live in the project's ``invoke.yaml`` under ``toa:``; invoke layers
``INVOKE_TOA_*`` environment variables and user/system config files over them,
and task flags override the result (``Settings.from_config(config, url=...)``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from toa_kernel.core.errors import UserError

VENDOR_URL = "http://kb.linuxvirtualserver.org/images/3/34/Linux-2.6.32-220.23.1.el6.x86_64.rs.src.tar.gz"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
EXTRAVERSION_RE = re.compile(r"^[A-Za-z0-9._+~-]*$")
CONFIG_BASES = ("tree", "lab")


@dataclass(frozen=True)
class Settings:
    """Everything a task may need, validated once."""

    url: str = VENDOR_URL
    sha256: str = ""
    mirrors: tuple[str, ...] = ()
    workdir: Path = Path("work")
    root: Path = Path("/")
    extraversion: str = "-toa"
    option_code: int = 254
    jobs: int = 0
    min_free_gib: float = 5.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    # Declarative inputs of the pipeline, relative paths taken from project_dir.
    project_dir: Path = Path(".")
    patches_dir: Path = Path("patches")
    configs_dir: Path = Path("configs")
    grub_dir: Path = Path("grub")
    ccache: bool = False
    # Kernel build: the .config to start from, "tree" (the tree's own) or "lab".
    config_base: str = "tree"
    # install-kernel: extra kernel arguments (besides grub/'s), startup style.
    kernel_args: str = ""
    startup: str = "modules"
    # Boot lab: seconds one QEMU boot may take.
    lab_timeout: float = 60.0
    # Out-of-tree module (kernels 3.0+): tarball URL template and branch.
    module_url: str = "https://github.com/huaweicloud/elb-toa/archive/refs/heads/{branch}.tar.gz"
    module_branch: str = "master"

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, **overrides: Any) -> Settings:
        """Read the ``toa`` section of an invoke config, then apply non-None overrides."""
        section: Mapping[str, Any] = {}
        if config is not None:
            section = config.get("toa", {}) or {}
        values: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for key, value in dict(section).items():
            if key in names:
                values[key] = value
        for key, value in overrides.items():
            if value is not None:
                if key not in names:
                    raise TypeError(f"unknown setting {key!r}")
                values[key] = value
        return cls(**coerce(values)).validated()

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed (None means unchanged)."""
        return replace(self, **coerce({k: v for k, v in changes.items() if v is not None})).validated()

    @property
    def effective_jobs(self) -> int:
        """``jobs`` with 0 meaning one per CPU."""
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)

    def input_dir(self, name: str) -> Path:
        """``patches_dir``/``configs_dir``/``grub_dir`` resolved against the project."""
        path = Path(getattr(self, f"{name}_dir"))
        return path if path.is_absolute() else self.project_dir / path

    @property
    def urls(self) -> list[str]:
        """The source URL followed by the mirrors, in the order they are tried."""
        return [self.url, *[m for m in self.mirrors if m != self.url]]

    def validated(self) -> Settings:
        for url in self.urls:
            check_url(url)
        if self.sha256 and not SHA256_RE.match(self.sha256):
            raise UserError(
                f"sha256 pin {self.sha256!r} is not 64 hexadecimal digits",
                "pass the digest printed by 'sha256sum FILE' (or leave the pin empty)",
            )
        if not 0 < self.option_code < 256:
            raise UserError(
                f"TOA option code {self.option_code} is outside 1..255",
                "use the TCP option kind your balancer sends (254 for Huawei Cloud ELB)",
            )
        if not EXTRAVERSION_RE.match(self.extraversion):
            raise UserError(
                f"EXTRAVERSION {self.extraversion!r} has characters a kernel release cannot hold",
                "use letters, digits and . _ + ~ - only, e.g. -toa",
            )
        if self.jobs < 0:
            raise UserError(f"jobs must be 0 (one per CPU) or more, not {self.jobs}")
        if self.retries < 0 or self.connect_timeout <= 0 or self.read_timeout <= 0 or self.backoff < 0:
            raise UserError("retries, timeouts and backoff must be positive numbers")
        if self.startup not in ("modules", "rc.local"):
            raise UserError(
                f"startup style {self.startup!r} is not known",
                "use 'modules' (/etc/sysconfig/modules/toa.modules) or 'rc.local'",
            )
        if self.config_base not in CONFIG_BASES:
            raise UserError(
                f"config base {self.config_base!r} is not known",
                "use 'tree' (the tree's own .config, for servers) or 'lab' (a small config for the boot lab)",
            )
        if self.lab_timeout <= 0:
            raise UserError("lab_timeout must be a positive number of seconds")
        return self


def check_url(url: str) -> None:
    """Accept http, https and file URLs only."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https", "file") or (parsed.scheme != "file" and not parsed.netloc):
        raise UserError(
            f"{url!r} is not an http(s):// or file:// URL",
            "pass --url with a full URL, or --tarball PATH for a file already on this machine",
        )


def coerce(values: dict[str, Any]) -> dict[str, Any]:
    """Convert config/flag values (often strings) into the field types."""
    out = dict(values)
    try:
        for key in ("option_code", "jobs", "retries"):
            if key in out:
                out[key] = int(out[key])
        for key in ("min_free_gib", "connect_timeout", "read_timeout", "backoff", "lab_timeout"):
            if key in out:
                out[key] = float(out[key])
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad numeric setting: {exc}", "check invoke.yaml, INVOKE_TOA_* and flags") from exc
    if "ccache" in out and isinstance(out["ccache"], str):
        out["ccache"] = out["ccache"].strip().lower() in ("1", "true", "yes", "on")
    for key in ("workdir", "root", "project_dir", "patches_dir", "configs_dir", "grub_dir"):
        if key in out:
            out[key] = Path(str(out[key])).expanduser()
    if "mirrors" in out:
        mirrors = out["mirrors"] or ()
        if isinstance(mirrors, str):
            mirrors = mirrors.replace(",", " ").split()
        out["mirrors"] = tuple(str(m) for m in mirrors)
    for key in ("url", "sha256", "extraversion", "kernel_args", "startup", "module_url", "module_branch"):
        if key in out and out[key] is not None:
            out[key] = str(out[key]).strip()
    if "sha256" in out:
        out["sha256"] = out["sha256"].lower()
    if "config_base" in out:
        out["config_base"] = str(out["config_base"]).strip().lower()
    return out
