"""Real devices for the HIL tests: a plain TOML inventory or a labgrid environment file.

  LLMOS_EDGE_HIL_INVENTORY=lab.toml   [[device]] name, address = "pi@10.0.0.7:22", identity, known_hosts,
                                      target = "rpi5"
  LG_ENV=env.yaml (labgrid)           targets.<name>.resources.NetworkService {address, username, port}
                                      plus options.llmos_identity / llmos_known_hosts / llmos_target
With neither, the real-device HIL tests are skipped with that reason.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_edge.errors import SpecError, UserError

NOT_CONFIGURED = ("no real device configured: set LLMOS_EDGE_HIL_INVENTORY=<inventory.toml> or "
                  "LG_ENV=<labgrid env.yaml> (see ci/devices.py)")


@dataclass(frozen=True)
class HilDevice:
    """What a HIL test needs to reach a device over SSH (QEMU guest or real board)."""

    name: str
    address: str  # user@host:port
    identity: Path | None
    known_hosts: Path | None
    target: str = "rpi5"


def _device(entry: dict[str, Any], file: str, where: str) -> HilDevice:
    address = entry.get("address")
    if not isinstance(address, str) or "@" not in address:
        raise SpecError(file, f"{where}.address", "must be user@host[:port]")
    ident, kh = entry.get("identity"), entry.get("known_hosts")
    return HilDevice(str(entry.get("name", address)), address, Path(ident) if ident else None,
                     Path(kh) if kh else None, str(entry.get("target", "rpi5")))


def from_inventory(path: Path) -> list[HilDevice]:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read HIL inventory {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), "(toml)", str(exc)) from exc
    return [_device(d, str(path), f"device[{i}]") for i, d in enumerate(raw.get("device", []))]


def from_labgrid(path: Path) -> list[HilDevice]:
    """Read only the NetworkService resources; labgrid itself is not needed to run these tests."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read labgrid environment {path}: {exc}") from exc
    opts = raw.get("options") or {}
    out = []
    for name, tgt in (raw.get("targets") or {}).items():
        res = (tgt or {}).get("resources") or {}
        items = res if isinstance(res, list) else [res]
        for item in items:
            ns = item.get("NetworkService") if isinstance(item, dict) else None
            if ns:
                addr = f"{ns.get('username', 'root')}@{ns['address']}:{ns.get('port', 22)}"
                out.append(_device({"name": name, "address": addr, "identity": opts.get("llmos_identity"),
                                    "known_hosts": opts.get("llmos_known_hosts"),
                                    "target": opts.get("llmos_target", "rpi5")}, str(path), name))
    return out


def configured_devices(env: dict[str, str] | None = None) -> list[HilDevice]:
    env = dict(os.environ) if env is None else env
    if env.get("LLMOS_EDGE_HIL_INVENTORY"):
        return from_inventory(Path(env["LLMOS_EDGE_HIL_INVENTORY"]))
    if env.get("LG_ENV"):
        return from_labgrid(Path(env["LG_ENV"]))
    return []
