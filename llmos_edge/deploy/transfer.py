"""Content-addressed transfer: send only blobs the device lacks, resume partial ones, verify on arrival."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..device import protocol as P
from ..device.protocol import RC_RESOURCE
from ..errors import DeviceError
from ..transports.base import Process
from .remote import Agent, failure
from .source import Blob, BundleSource

_ATTEMPTS = 3
_CHUNK = 1 << 20


@dataclass
class TransferStats:
    bytes_total: int = 0  # distinct bytes in the bundle
    bytes_needed: int = 0  # what the device lacked at the start
    bytes_sent: int = 0  # what actually went over the link (includes re-sends)
    files_sent: int = 0
    files_reused: int = 0
    resumed_bytes: int = 0  # bytes found already staged from an earlier, interrupted run
    resent: list[str] = field(default_factory=list)  # blobs that arrived corrupted and were sent again


@dataclass(frozen=True)
class Plan:
    missing: dict[str, int]  # sha -> offset to resume from
    stats: TransferStats


async def plan_transfer(agent: Agent, bundle: BundleSource) -> Plan:
    """Ask the device what it holds (read-only) and work out what must be sent."""
    blobs = bundle.blobs()
    have = await agent.call(P.HAVE, data={"files": {sha: b.size for sha, b in blobs.items()}})
    present = set(have["present"])
    partial: dict[str, int] = have["partial"]
    missing = {sha: int(partial.get(sha, 0)) for sha in blobs if sha not in present}
    stats = TransferStats(bytes_total=bundle.total_bytes, files_reused=len(present))
    stats.resumed_bytes = sum(missing.values())
    stats.bytes_needed = sum(blobs[s].size - off for s, off in missing.items())
    return Plan(missing, stats)


async def send(
    agent: Agent,
    bundle: BundleSource,
    plan: Plan,
    token: str,
    root: str,
    progress: Callable[[int], None] | None = None,
) -> TransferStats:
    """Upload what is missing into staging, then have the device verify and store it."""
    blobs, stats, todo = bundle.blobs(), plan.stats, dict(plan.missing)

    def sent(n: int) -> None:
        stats.bytes_sent += n
        if progress:
            progress(n)

    for _ in range(_ATTEMPTS):
        if not todo:
            return stats
        await _stream(agent, blobs, todo, token, stats, sent)
        res = await agent.call(P.COMMIT, "--token", token, data={"files": {s: blobs[s].size for s in todo}})
        stats.resent += res["bad"]
        todo = {sha: 0 for sha in [*res["bad"], *res["missing"]]}
    if todo:
        raise DeviceError(
            f"{len(todo)} file(s) kept failing verification on the device",
            hints=["the device's storage or the link may be faulty; check `dmesg` on the device"],
        )
    return stats


async def _stream(
    agent: Agent,
    blobs: dict[str, Blob],
    todo: dict[str, int],
    token: str,
    stats: TransferStats,
    sent: Callable[[int], None],
) -> None:
    """All missing bytes through one agent process: a JSON header line, then the bytes, per blob."""
    proc = await agent.transport.start(agent.argv(P.RECEIVE, "--token", token))
    left = sum(blobs[s].size - off for s, off in todo.items())
    try:
        for sha, offset in todo.items():
            blob = blobs[sha]
            left -= blob.size - offset
            if offset >= blob.size and blob.size > 0:
                continue  # fully staged by an earlier run; commit verifies it
            header = {"sha": sha, "offset": offset, "size": blob.size - offset, "after": left}
            await proc.write(json.dumps(header).encode() + b"\n")
            with open(blob.path, "rb") as f:
                f.seek(offset)
                while chunk := f.read(_CHUNK):
                    await proc.write(chunk)
                    sent(len(chunk))
            stats.files_sent += 1
        out = await proc.finish(timeout=600)
    except DeviceError as exc:
        # the device may have stopped reading because it failed (a full disk): its answer says why
        answer = await _last_answer(proc)
        await proc.close()
        if answer.get("resource"):
            raise failure(agent.transport.name, RC_RESOURCE, answer) from None
        raise exc from None
    except BaseException:
        await proc.close()
        raise
    lines = out.decode(errors="replace").strip().splitlines()
    answer = json.loads(lines[-1]) if lines else {}
    if answer.get("resource"):
        raise failure(agent.transport.name, RC_RESOURCE, answer)
    if not answer.get("ok"):
        raise DeviceError(
            f"{agent.transport.name}: receiving failed: {answer.get('error', 'no answer')}",
            hints=["rerun: the transfer resumes from what arrived"],
        )


async def _last_answer(proc: Process) -> dict[str, Any]:
    try:
        out = await proc.finish(timeout=5)
    except DeviceError:
        return {}
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


async def resend(
    agent: Agent,
    bundle: BundleSource,
    shas: list[str],
    token: str,
    root: str,
    stats: TransferStats,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Blobs the device found damaged in its store at install time are sent again."""
    plan = Plan({s: 0 for s in shas}, stats)
    stats.resent += shas
    await send(agent, bundle, plan, token, root, progress)
