"""The two error families of the project.

``UserError``: the input or the request is wrong (bad flag, bad URL, checksum
mismatch, a tree that is not a kernel tree). The message says what is wrong and
``fix`` says what to do about it.

``EnvironmentFailure``: the machine or the network failed us (disk full, a tool
missing, a server that keeps failing, a lock held by another run).

Tasks catch ``ToaError`` and print ``message`` and ``fix``; anything else is a bug
and may show a traceback.
"""

from __future__ import annotations


class ToaError(Exception):
    """Base of every foreseeable failure; carries a message and a fix."""

    kind = "error"
    exit_code = 1

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message

    def render(self) -> str:
        """Return the text a person sees: the problem, then what to do."""
        text = f"{self.kind}: {self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "fix": self.fix}


class UserError(ToaError):
    """The request or its inputs are wrong; the user can correct them."""

    kind = "error"
    exit_code = 2


class EnvironmentFailure(ToaError):
    """The machine, a tool or the network failed; retrying after fixing it helps."""

    kind = "environment error"
    exit_code = 3


class LockHeld(EnvironmentFailure):
    """Another run of the pipeline holds the work-directory lock."""


class ToolMissing(EnvironmentFailure):
    """A program the step needs is not installed."""

    def __init__(self, tool: str, package_hint: str) -> None:
        super().__init__(f"'{tool}' is not installed or not on PATH", package_hint)
        self.tool = tool
