"""The host half of an esp32s3-host-offload bundle: the bridge package and its template values.

The bridge ships as `bridge/llmos_bridge/` (like runtime/llmos_runtime/): a copy of the modules
below, which import each other relatively and need only the stdlib and pyserial, so the host runs
it with `PYTHONPATH=<bundle>/bridge python3 -m llmos_bridge --port ...` and no llmos_edge.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlunsplit

from ..errors import UserError

KIND = "esp32s3-host-offload"
PACKAGE = "llmos_bridge"
DEFAULT_PORT = "/dev/ttyACM0"  # the ESP32-S3's native USB-Serial/JTAG; bridge.env may override it
REQUEST_TIMEOUT_S = 120
BRIDGE_DISTS = ("pyserial",)
# dependency order does not matter; these are all the bridge imports (checked by the tests)
MODULES = ("_errors.py", "_standalone_errors.py", "ports.py", "protocol.py", "bridge.py")
_HERE = Path(__file__).resolve().parent
_INIT = '"""llmos-edge ESP32 host bridge (copied from llmos_edge.esp32 into this bundle)."""\n'
_MAIN = (
    '"""`python -m llmos_bridge --port P --runtime URL`: the bridge daemon."""\n\n'
    "from .bridge import main\n\n"
    "raise SystemExit(main())\n"
)


def host_bundle_target(target: Any) -> Any:
    """The target the host bundle is built for: the [esp32] host_target's profile, named after `target`.

    Platform, budgets, service limits and install paths come from the host (the model runs there);
    the name, bundle kind and [esp32] section stay the esp32 target's, so the manifest says which
    system the bundle belongs to and the bundle renders the bridge.
    """
    from ..spec import load_target

    esp = target.esp32
    host = load_target(esp.host_target)
    return host.model_copy(update={"name": target.name, "description": target.description,
                                   "bundle_kind": KIND, "esp32": esp})


def copy_bridge(dest: Path) -> list[Path]:
    """Write the self-contained bridge package into dest (a new folder); return the files written."""
    dest.mkdir(parents=True)
    written = []
    for name, data in [("__init__.py", _INIT.encode()), ("__main__.py", _MAIN.encode()),
                       *((m, (_HERE / m).read_bytes()) for m in MODULES)]:
        path = dest / name
        path.write_bytes(data)
        path.chmod(0o644)
        written.append(path)
    dest.chmod(0o755)
    return written


def runtime_url(runtime_config: dict[str, Any]) -> str:
    """Where the bridge reaches the bundle's runtime: loopback, even when the runtime listens wider."""
    host = str(runtime_config.get("host") or "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit(("http", f"{host}:{int(runtime_config['port'])}", "", "", ""))


def bridge_context(target: Any, runtime_config: dict[str, Any]) -> dict[str, Any]:
    """Values the host/ templates see as `bridge`: port and baud from [esp32], URL from the runtime."""
    esp = target.esp32
    key_env = runtime_config.get("api_key_env")
    if key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key_env)):
        raise UserError(f"runtime config api_key_env {key_env!r} is not an environment variable name",
                        hints=["use letters, digits and '_', e.g. LLMOS_API_KEY"])
    return {"port": getattr(esp, "port", None) or DEFAULT_PORT, "baud": int(esp.baud),
            "runtime_url": runtime_url(runtime_config), "request_timeout": REQUEST_TIMEOUT_S,
            "extra_args": f" --api-key-env {key_env}" if key_env else "", "chip": esp.chip}
