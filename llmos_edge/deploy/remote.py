"""Calling the device agent: it travels inside the command line, so probing writes nothing."""

from __future__ import annotations

import base64
import functools
import json
import zlib
from typing import Any

from ..device import pack
from ..device import protocol as P
from ..device.protocol import COMMANDS, RC_LOCKED
from ..errors import DeviceError
from ..transports.base import Process, Transport


class AgentFailed(DeviceError):
    """The agent ran and said no; rc and payload tell the caller why."""

    def __init__(
        self, message: str, rc: int, payload: dict[str, Any], *, hints: list[str] | None = None
    ) -> None:
        super().__init__(message, hints=hints or [])
        self.rc = rc
        self.payload = payload


@functools.cache
def bootstrap() -> str:
    """A python -c program: the packed agent (bin/llmos-agent's bytes), compressed into the argument."""
    packed = base64.b64encode(zlib.compress(pack.agent_script(), 9)).decode()
    return (
        f"import base64,sys,zlib;sys.argv[0]='llmos-agent';"
        f"exec(compile(zlib.decompress(base64.b64decode('{packed}')),'llmos-agent','exec'))"
    )


class Agent:
    def __init__(self, transport: Transport, root: str, python: str = "python3") -> None:
        self.transport = transport
        self.root = root
        self.python = python

    def argv(self, command: str, *options: str) -> list[str]:
        if command not in COMMANDS:
            raise ValueError(f"not an agent command: {command!r}")  # a bug on the host side
        return [self.python, "-c", bootstrap(), command, "--root", self.root, *options]

    async def call(
        self, command: str, *options: str, data: dict[str, Any] | None = None, timeout: float | None = 600
    ) -> dict[str, Any]:
        stdin = json.dumps(data).encode() if data is not None else b""
        res = await self.transport.exec(self.argv(command, *options), stdin=stdin, timeout=timeout)
        payload = _parse(res.stdout, res.stderr, self.transport.name, command)
        if res.rc != 0 or not payload.get("ok"):
            raise failure(self.transport.name, res.rc, payload)
        return payload

    async def hold(self, token: str, owner: str, ttl: float, wait: float = 120) -> Process:
        """Start the lock holder; it keeps the device lock until the returned process is closed.

        Device-side work that outlived an earlier session (an orphaned activate) is waited for, up
        to `wait` seconds, so the next deploy converges instead of being turned away.
        """
        argv = self.argv(P.HOLD, "--token", token, "--owner", owner, "--ttl", str(ttl), "--wait", str(wait))
        proc = await self.transport.start(argv)
        try:
            line = await proc.readline(60 + wait)
        except TimeoutError:
            await proc.close()
            raise DeviceError(f"{self.transport.name}: the device did not answer the lock request") from None
        payload = _parse(line, b"", self.transport.name, "hold")
        if not payload.get("ok"):
            await proc.close()
            raise failure(self.transport.name, RC_LOCKED, payload)
        return proc


def _parse(stdout: bytes, stderr: bytes, device: str, command: str) -> dict[str, Any]:
    text = stdout.decode(errors="replace").strip().splitlines()
    try:
        payload = json.loads(text[-1]) if text else None
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        err = stderr.decode(errors="replace").strip()[-800:]
        if "not found" in err and "python3" in err:
            raise DeviceError(
                f"{device} has no python3",
                hints=["install python3 on the device (apt install python3) or pass --remote-python PATH"],
            )
        raise DeviceError(f"{device}: device agent '{command}' gave no answer: {err or 'no output'}")
    return payload


def failure(device: str, rc: int, payload: dict[str, Any]) -> AgentFailed:
    if rc == RC_LOCKED:
        return AgentFailed(
            f"{device} is locked by {payload.get('holder') or 'another deploy'} "
            f"(pid {payload.get('holder_pid') or '?'}), {held_for(payload.get('held_for'))}",
            rc,
            payload,
            hints=[
                "wait for that deploy to finish and rerun",
                "a lock is freed as soon as the process holding it ends (a deploy's session, or the "
                "device-side work it started)",
            ],
        )
    hints = [str(h) for h in payload.get("hints") or []]
    return AgentFailed(f"{device}: {payload.get('error', 'device agent failed')}", rc, payload, hints=hints)


def held_for(seconds: Any) -> str:
    """A lock's age as the device measured it on its boot clock (never its wall-clock timestamps)."""
    if not isinstance(seconds, int | float):
        return "held for an unknown time"
    return f"held for {seconds:.0f}s (measured on the device)"
