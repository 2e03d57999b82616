"""toa-kernel: Invoke tasks to build, install and verify a TOA kernel on CentOS 6.

Each task is thin: it reads settings (invoke.yaml, INVOKE_TOA_* variables, its
flags), calls one function of the ``toa_kernel`` package and prints the result.
``invoke --list`` shows the tasks, ``invoke --help TASK`` their flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invoke import Context, task

from toa_kernel.cli import is_dry, reports_errors, settings_for
from toa_kernel.console import Console
from toa_kernel.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parent

# Help texts shared by every task that takes these flags.
WORKDIR_HELP = "work directory for downloads, trees, logs and manifests (default: toa.workdir, 'work')"
ROOT_HELP = "root prefix of the system to act on, like DESTDIR (default /)"
DRY_RUN_HELP = "print the commands and unified diffs this would apply, change nothing (also: invoke --dry)"
JSON_HELP = "print the result as JSON on stdout (messages go to stderr)"
QUIET_HELP = "no progress bars or notes, only warnings, errors and the result"


def settings(c: Context, **flags: Any) -> Settings:
    """Settings for a task: invoke's config, then the task's flags."""
    return settings_for(c, project_dir=PROJECT_DIR, **flags)


def console(quiet: bool = False, json: bool = False) -> Console:
    return Console(quiet=quiet, json_mode=json)


# === fetch ===================================================================


# === build ===================================================================


# === install-kernel, grub, rollback ==========================================


# === verify, serve ===========================================================


# === lab =====================================================================


# === build-module, install-module, rollback-module ===========================


# === demo ====================================================================


__all__ = [
    "DRY_RUN_HELP",
    "JSON_HELP",
    "QUIET_HELP",
    "ROOT_HELP",
    "WORKDIR_HELP",
    "is_dry",
    "reports_errors",
    "task",
]
