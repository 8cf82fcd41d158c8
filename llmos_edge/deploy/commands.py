"""status | rollback | logs | releases on a device, through the agent."""

from __future__ import annotations

import uuid
from typing import Any

from ..device import protocol as P
from ..transports.base import Transport
from ..transports.ssh import SshOptions
from .remote import Agent
from .run import open_transport, owner_label


async def run_agent(
    address: str,
    ssh: SshOptions | None,
    root: str | None,
    command: str,
    *args: str,
    locked: bool = False,
    remote_python: str = "python3",
    timeout: float = 600,
) -> dict[str, Any]:
    """Run one agent command; with locked=True the device lock is held around it."""
    transport = await open_transport(address, ssh)
    try:
        agent = Agent(transport, root or await find_root(transport, remote_python), remote_python)
        if not locked:
            return await agent.call(command, *args, timeout=timeout)
        token = uuid.uuid4().hex
        holder = await agent.hold(token, owner_label(), 600)
        try:
            return await agent.call(command, "--token", token, *args, timeout=timeout)
        finally:
            await holder.close()
    finally:
        await transport.close()


async def find_root(transport: Transport, python: str) -> str:
    """The first of install.DEVICE_ROOTS that holds an install on the device (deploy's default)."""
    from .install import DEVICE_ROOTS, find_root_argv

    res = await transport.exec(find_root_argv(python), timeout=120)
    found = res.stdout.decode(errors="replace").strip()
    return found if res.rc == 0 and found in DEVICE_ROOTS else DEVICE_ROOTS[0]


async def status(address: str, ssh: SshOptions | None, root: str | None) -> dict[str, Any]:
    return await run_agent(address, ssh, root, P.STATUS)


async def rollback(
    address: str, ssh: SshOptions | None, root: str | None, to: str | None = None, timeout: float = 120
) -> dict[str, Any]:
    args = ["--timeout", str(timeout), *(["--to", to] if to else [])]
    return await run_agent(address, ssh, root, P.ROLLBACK, *args, locked=True, timeout=timeout * 3 + 60)


async def logs(address: str, ssh: SshOptions | None, root: str | None, lines: int = 50) -> dict[str, Any]:
    return await run_agent(address, ssh, root, P.LOGS, "--lines", str(lines))


async def releases(
    address: str, ssh: SshOptions | None, root: str | None, keep: int | None = None
) -> dict[str, Any]:
    if keep is None:
        return await run_agent(address, ssh, root, P.RELEASES)
    return await run_agent(address, ssh, root, P.RELEASES, "--keep", str(keep), locked=True)
