"""Glue between invoke tasks and the package: settings, dry-run, errors."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable, TypeVar

from invoke import Context, Executor
from invoke.exceptions import Exit, UncastableEnvVar

from toa_kernel.core.errors import ToaError
from toa_kernel.core.settings import ENV_PREFIX, Settings

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


class CheckedExecutor(Executor):
    """invoke's executor, with its reading of ``INVOKE_*`` variables made safe.

    invoke casts an environment variable to the type of the value it overrides
    and raises ValueError (a traceback) when it cannot. The project's invoke.yaml
    writes every value as text, so that does not happen to ``INVOKE_TOA_*``; a
    config file of another level that sets a number can still bring it back, and
    then this reports the variable, exit code 2. (Selected by ``tasks.executor_class``
    in invoke.yaml.)
    """

    def execute(self, *tasks: Any) -> Any:
        try:
            self.config.load_shell_env()
        except (ValueError, UncastableEnvVar) as exc:
            names = (
                " or ".join(name for name in sorted(os.environ) if name.startswith("INVOKE_")) or "INVOKE_*"
            )
            print(
                f"error: an environment variable cannot be read as its setting's type ({exc})\n"
                f"  fix: correct {names}; or, in the config file that gives that setting a number, write "
                f'it as text (option_code: "254") so that toa-kernel checks {ENV_PREFIX}* values itself',
                file=sys.stderr,
                flush=True,
            )
            raise Exit(code=2) from None
        return super().execute(*tasks)
