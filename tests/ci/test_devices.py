"""Real-device configuration for the HIL tests: inventory TOML and labgrid environment files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.devices import NOT_CONFIGURED, configured_devices, from_labgrid
from llmos_edge.errors import SpecError


def test_nothing_configured_means_no_devices_and_a_reason() -> None:
    assert configured_devices({}) == []
    assert "LLMOS_EDGE_HIL_INVENTORY" in NOT_CONFIGURED and "LG_ENV" in NOT_CONFIGURED


def test_inventory_devices(tmp_path: Path) -> None:
    inv = tmp_path / "lab.toml"
    inv.write_text('[[device]]\nname = "pi5-a"\naddress = "pi@10.0.0.7:2222"\nidentity = "/k/id"\n'
                   'known_hosts = "/k/kh"\ntarget = "rpi5"\n\n[[device]]\naddress = "root@jetson"\n'
                   'target = "jetson-orin-nano"\n')
    devs = configured_devices({"LLMOS_EDGE_HIL_INVENTORY": str(inv)})
    assert [d.name for d in devs] == ["pi5-a", "root@jetson"]
    assert devs[0].identity == Path("/k/id") and devs[0].known_hosts == Path("/k/kh")
    assert devs[1].target == "jetson-orin-nano" and devs[1].identity is None


def test_inventory_without_user_is_a_spec_error(tmp_path: Path) -> None:
    inv = tmp_path / "lab.toml"
    inv.write_text('[[device]]\naddress = "10.0.0.7"\n')
    with pytest.raises(SpecError) as err:
        configured_devices({"LLMOS_EDGE_HIL_INVENTORY": str(inv)})
    assert err.value.field == "device[0].address"


def test_labgrid_network_service(tmp_path: Path) -> None:
    env = tmp_path / "env.yaml"
    env.write_text("targets:\n  main:\n    resources:\n      NetworkService:\n        address: 192.168.7.2\n"
                   "        username: pi\n        port: 22\n    drivers: {SSHDriver: {}}\n"
                   "options:\n  llmos_identity: /keys/lab\n  llmos_target: rpi5\n")
    (dev,) = from_labgrid(env)
    assert dev.address == "pi@192.168.7.2:22" and dev.identity == Path("/keys/lab") and dev.target == "rpi5"
    assert configured_devices({"LG_ENV": str(env)}) == [dev]
