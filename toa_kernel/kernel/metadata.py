"""Per-build records: ``builds/<id>/metadata.json`` and ``logs/build-<id>.log``.

Every ``invoke build`` gets an id (a UTC timestamp), a log of every make it ran
and a ``metadata.json`` written atomically at the end, also when the build
failed, so a failed build can be diagnosed and a good one reproduced.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from toa_kernel.core.fileops import atomic_write_json, timestamp
from toa_kernel.core.settings import Settings
from toa_kernel.core.state import Workdir

METADATA_NAME = "metadata.json"


def new_build_id(workdir: Workdir) -> str:
    """A fresh id: the UTC time, with a counter when two builds share a second."""
    base = timestamp()
    build_id, counter = base, 1
    while (workdir.builds / build_id).exists() or log_path(workdir, build_id).exists():
        counter += 1
        build_id = f"{base}-{counter}"
    return build_id


def build_dir(workdir: Workdir, build_id: str) -> Path:
    return workdir.builds / build_id


def log_path(workdir: Workdir, build_id: str) -> Path:
    """Where the output of every make a build runs goes: ``logs/build-<id>.log``."""
    return workdir.logs / f"build-{build_id}.log"


def write_metadata(directory: Path, document: dict[str, Any]) -> Path:
    """Write ``metadata.json`` into a build's directory, atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(directory / METADATA_NAME, document)


def read_metadata(path: Path) -> dict[str, Any]:
    """A build's metadata; an empty dict when it is missing or unreadable."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def reproduce_command(settings: Settings, tree: Path | None, until: str | None, only: str | None) -> str:
    """The ``invoke build`` command line that runs this build again with the same inputs."""
    argv = [
        "invoke",
        "build",
        "--workdir",
        str(settings.workdir),
        "--option-code",
        str(settings.option_code),
        f"--extraversion={settings.extraversion}",
        "--jobs",
        str(settings.effective_jobs),
        "--config-base",
        settings.config_base,
    ]
    if settings.ccache:
        argv.append("--ccache")
    if tree is not None:
        argv += ["--tree", str(tree)]
    if only:
        argv += ["--only", only]
    elif until:
        argv += ["--until", until]
    env = [
        f"INVOKE_TOA_PATCHES_DIR={settings.input_dir('patches')}",
        f"INVOKE_TOA_CONFIGS_DIR={settings.input_dir('configs')}",
    ]
    return " ".join([*(shlex.quote(e) for e in env), shlex.join(argv)])
