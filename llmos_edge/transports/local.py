"""The local machine as a device: deploy to this computer, and dry runs without a network."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ..errors import DeviceError
from .base import EXEC, GET, PUT, ExecResult, Progress

_BLOCK = 1 << 20


class LocalTransport:
    name = "local"
    capabilities = frozenset({EXEC, PUT, GET})

    async def exec(self, argv: list[str], *, stdin: bytes = b"", timeout: float | None = None) -> ExecResult:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=Path.home(),
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DeviceError(f"local command timed out after {timeout}s: {argv[0]}") from None
        return ExecResult(proc.returncode if proc.returncode is not None else 255, out, err)

    async def start(self, argv: list[str]) -> _LocalProcess:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=Path.home()
        )
        return _LocalProcess(proc)

    async def put(
        self, local: Path, remote: str, *, offset: int = 0, progress: Progress | None = None
    ) -> None:
        dest = Path(os.path.expanduser(remote))
        with open(local, "rb") as src, open(dest, "r+b" if offset else "wb") as dst:
            src.seek(offset)
            dst.seek(offset)
            while chunk := src.read(_BLOCK):
                dst.write(chunk)
                if progress:
                    progress(len(chunk))
                await asyncio.sleep(0)

    async def get(self, remote: str, local: Path) -> None:
        local.write_bytes(Path(os.path.expanduser(remote)).read_bytes())

    async def close(self) -> None:
        return None


class _LocalProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    async def readline(self, timeout: float) -> bytes:
        assert self._proc.stdout is not None
        return await asyncio.wait_for(self._proc.stdout.readline(), timeout)

    async def write(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        await self._proc.stdin.drain()

    async def finish(self, timeout: float) -> bytes:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        out = await asyncio.wait_for(self._proc.stdout.read(), timeout)
        await asyncio.wait_for(self._proc.wait(), timeout)
        return out

    async def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
