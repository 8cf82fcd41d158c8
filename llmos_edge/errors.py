"""The one place where failures get a category, an exit code and advice.

Raise these for anything a user or a device can cause; anything else is a bug and the CLI
prints its traceback with a request to report it.
"""

from __future__ import annotations

from collections.abc import Sequence


class LlmosError(Exception):
    """A known failure: its message is shown without a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hints = list(hints)

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hints:
            text += "\nThings to try:\n" + "\n".join(f"  - {h}" for h in self.hints)
        return text


class UserError(LlmosError):
    """Bad input: unknown name, invalid file, missing model, not enough disk."""

    exit_code = 2


class SpecError(UserError):
    """A target or recipe file breaks the schema; names the file and the field."""

    def __init__(self, file: str, field: str, problem: str, *, hints: Sequence[str] = ()) -> None:
        super().__init__(f"{file}: field '{field}': {problem}", hints=hints)
        self.file = file
        self.field = field
        self.problem = problem


class DeviceError(LlmosError):
    """The device or the link to it failed (transport, preflight on the device, flashing)."""

    exit_code = 3


class CheckFailed(LlmosError):
    """A quality gate, smoke test or verification ran and said no."""

    exit_code = 4


class BugError(Exception):
    """An internal invariant broke; never raised for user input."""
