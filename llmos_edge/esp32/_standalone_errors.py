"""Stand-ins for llmos_edge.errors with the same interface, used only by the bundled bridge copy."""

from __future__ import annotations

from collections.abc import Sequence


class LlmosError(Exception):
    """A known failure: its message is logged without a traceback."""

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


class DeviceError(LlmosError):
    """The serial device or the link to it failed."""

    exit_code = 3
