"""Transports: jump host, capabilities, local transport, address parsing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmos_edge.errors import DeviceError, UserError
from llmos_edge.transports.base import EXEC, GET, PUT
from llmos_edge.transports.local import LocalTransport
from llmos_edge.transports.ssh import Address, connect

from .devices import Device, start_device


def test_address_parsing() -> None:
    assert Address.parse("pi@10.0.0.5") == Address("pi", "10.0.0.5", 22)
    assert Address.parse("pi@host:2222") == Address("pi", "host", 2222)
    assert Address.parse("root@[::1]:2200") == Address("root", "::1", 2200)
    with pytest.raises(UserError):
        Address.parse("pi@host:notaport")


async def _through_jump(target: Device, jump: Device) -> bytes:
    t = await connect(target.address, target.options(jump=jump.address))
    try:
        assert {EXEC, PUT, GET} <= t.capabilities
        res = await t.exec(["sh", "-c", 'echo "$SSH_CONNECTION"'])
        return res.stdout
    finally:
        await t.close()


def test_jump_host(device: Device, tmp_path: Path, client_key: tuple[Path, Path]) -> None:
    (tmp_path / "target").mkdir()
    target = start_device(tmp_path / "target", client_key[0], client_key[1])
    try:
        target.known_hosts.write_text(target.host_key_line() + device.host_key_line())
        conn_info = asyncio.run(_through_jump(target, device)).decode()
        assert conn_info.split()[-1] == str(target.port)  # we really reached the target sshd
    finally:
        target.stop()


def test_jump_host_key_is_pinned_too(device: Device, tmp_path: Path, client_key: tuple[Path, Path]) -> None:
    (tmp_path / "target").mkdir()
    target = start_device(tmp_path / "target", client_key[0], client_key[1])
    try:
        target.known_hosts.write_text(target.host_key_line())  # the jump host is unknown
        with pytest.raises(DeviceError, match="unknown"):
            asyncio.run(_through_jump(target, device))
    finally:
        target.stop()


async def _local(tmp: Path) -> tuple[bytes, bytes]:
    t = LocalTransport()
    src = tmp / "src.bin"
    src.write_bytes(b"0123456789" * 1000)
    await t.put(src, str(tmp / "dst.bin"))
    await t.put(src, str(tmp / "dst.bin"), offset=5000)
    res = await t.exec(["cat", str(tmp / "dst.bin")])
    return res.stdout, src.read_bytes()


def test_local_transport(tmp_path: Path) -> None:
    got, want = asyncio.run(_local(tmp_path))
    assert got == want


async def _sftp_resume(dev: Device, tmp: Path) -> bytes:
    t = await connect(dev.address, dev.options())
    try:
        src = tmp / "blob"
        src.write_bytes(bytes(range(256)) * 4096)
        remote = f"{dev.home}/blob"
        await t.put(src, remote)
        await t.put(src, remote, offset=300_000)  # resume rewrites the tail in place
        back = tmp / "back"
        await t.get(remote, back)
        return back.read_bytes()
    finally:
        await t.close()


def test_ssh_put_get_with_offset(device: Device, tmp_path: Path) -> None:
    assert asyncio.run(_sftp_resume(device, tmp_path)) == (tmp_path / "blob").read_bytes()


def test_deploy_to_local_machine(tmp_path: Path, signing_key: tuple[Path, Path]) -> None:
    """`--device local`: the same agent and stream, through LocalTransport (here as root, in tmp)."""
    import urllib.request

    from llmos_edge.deploy.run import DeployOptions, deploy_to
    from llmos_edge.deploy.source import load_bundle

    from .bundles import make_bundle
    from .devices import free_port

    port = free_port()
    b = make_bundle(tmp_path / "b", "1.0.0", port=port, key=signing_key[0])
    root = tmp_path / "root"
    src = load_bundle(b, signing_key[1], allow_unsigned=False)
    rep = asyncio.run(deploy_to("local", src, DeployOptions(root=str(root), smoke_timeout=20)))
    try:
        assert rep.status == "ok" and (root / "current").resolve().name == "1.0.0"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b"1.0.0" in r.read()
    finally:
        from llmos_edge.device import base, service

        service.service_stop(base.Layout(str(root)))
