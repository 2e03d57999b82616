"""Glue between invoke tasks and the package: settings, dry-run, errors."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

from invoke import Context
from invoke.exceptions import Exit

from toa_kernel.core.errors import ToaError
from toa_kernel.core.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_for(c: Context, **flags: Any) -> Settings:
    """Settings from invoke's config with the task's flags laid over them."""
    return Settings.from_config(c.config, **flags)


def is_dry(c: Context, dry_run: bool) -> bool:
    """True for ``--dry-run`` on the task or ``invoke --dry``."""
    return bool(dry_run) or bool(c.config.get("run", {}).get("dry", False))


def reports_errors(task_function: F) -> F:
    """Print a ``ToaError`` as message + fix and exit non-zero, without a traceback.

    With ``--json`` the error is also the JSON document on stdout, so a machine
    reading the result sees ``{"ok": false, "error": {...}}`` instead of nothing.
    """

    @functools.wraps(task_function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task_function(*args, **kwargs)
        except ToaError as exc:
            if kwargs.get("json") and not getattr(exc, "reported_as_json", False):
                print(json.dumps({"ok": False, "error": exc.as_dict()}, indent=2), flush=True)
            print(exc.render(), file=sys.stderr, flush=True)
            raise Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            raise Exit(code=130) from None

    return wrapper  # type: ignore[return-value]
