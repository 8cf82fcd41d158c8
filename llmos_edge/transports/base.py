"""One interface for reaching a device, described by capabilities so callers offer only what works."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# exec: run a command (argv); put: upload a file with resume; get: download a file.
EXEC, PUT, GET = "exec", "put", "get"
Progress = Callable[[int], None]  # called with the number of new bytes sent


@dataclass(frozen=True)
class ExecResult:
    rc: int
    stdout: bytes
    stderr: bytes


class Process(Protocol):
    """A long-running command: its first stdout line is read, closing stdin tells it to end."""

    async def readline(self, timeout: float) -> bytes: ...

    async def write(self, data: bytes) -> None:
        """Send to its stdin, waiting while the link is congested."""
        ...

    async def finish(self, timeout: float) -> bytes:
        """Close stdin, wait for it to exit and return the rest of its stdout."""
        ...

    async def close(self) -> None: ...


class Transport(Protocol):
    """A connected device. All paths on the device are absolute or relative to the login folder."""

    name: str
    capabilities: frozenset[str]

    async def exec(self, argv: list[str], *, stdin: bytes = b"", timeout: float | None = None) -> ExecResult:
        """Run argv on the device (never through a shell built from user input)."""
        ...

    async def start(self, argv: list[str]) -> Process:
        """Start argv and keep it running with an open stdin (used for the device lock)."""
        ...

    async def put(
        self, local: Path, remote: str, *, offset: int = 0, progress: Progress | None = None
    ) -> None:
        """Write local[offset:] into remote at offset (creating it when offset is 0)."""
        ...

    async def get(self, remote: str, local: Path) -> None: ...

    async def close(self) -> None: ...
