"""Render the ESP-IDF project for an esp32 target and build it when idf.py exists.

`*.j2` files are rendered with jinja2 (StrictUndefined: a missing value is an error, never an empty
string); everything else is copied as is (llmos_proto.c/.h are the same files the host tests compile).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fsutil import atomic_dir
from ..paths import shipped_dir

TEMPLATE = "esp32s3-host-offload"
HOST_DIR = "host"  # the host half's files: rendered into the host bundle (bundle/render.py), not here
APP_OFFSET = 0x10000


@dataclasses.dataclass(frozen=True)
class FirmwareResult:
    project_dir: Path
    built: bool
    missing: list[str]
    images: list[Path]


def template_dir(kind: str = TEMPLATE) -> Path:
    return shipped_dir("firmware_templates") / kind


def firmware_context(target: Any, version: str) -> dict[str, Any]:
    """Values the templates see; flash layout follows the target's flash size."""
    esp = getattr(target, "esp32", None)
    if esp is None:
        raise UserError(f"target {getattr(target, 'name', '?')} has no [esp32] section",
                        hints=["use an esp32 target such as esp32s3-host-offload"])
    flash = esp.flash_mb * 1024 * 1024
    ota_size = ((flash - APP_OFFSET) // 2) & ~0xFFFF
    return {
        "target_name": target.name, "version": version, "chip": esp.chip, "psram_mb": esp.psram_mb,
        "flash_mb": esp.flash_mb, "baud": esp.baud, "host_target": esp.host_target,
        "ota0_offset": APP_OFFSET, "ota1_offset": APP_OFFSET + ota_size, "ota_size": ota_size,
    }


def render_tree(src: Path, dest: Path, context: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Render src into dest; `skip` names top-level folders of src to leave out."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or rel.parts[0] in skip:
            continue
        out = dest / (rel.with_suffix("") if path.suffix == ".j2" else rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".j2":
            try:
                out.write_text(env.from_string(path.read_text()).render(**context))
            except jinja2.UndefinedError as exc:
                raise UserError(f"firmware template {rel}: {exc.message}") from exc
        else:
            shutil.copyfile(path, out)


def missing_tools() -> list[str]:
    missing = []
    if shutil.which("idf.py") is None:
        missing.append("idf.py (ESP-IDF v5.x: install it, then `. $IDF_PATH/export.sh`)")
    if not os.environ.get("IDF_PATH"):
        missing.append("IDF_PATH environment variable (set by ESP-IDF's export.sh)")
    return missing


def render_firmware_project(target: Any, out_dir: Path, *, version: str) -> FirmwareResult:
    """Write the ESP-IDF project to out_dir; build it with idf.py if present, else say what is missing."""
    ctx = firmware_context(target, version)
    with atomic_dir(out_dir) as tmp:
        render_tree(template_dir(), tmp, ctx, skip=(HOST_DIR,))
    missing = missing_tools()
    if missing:
        return FirmwareResult(out_dir, False, missing, [])
    proc = subprocess.run(["idf.py", "-C", str(out_dir), "set-target", ctx["chip"], "build"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise UserError(f"idf.py build failed for {out_dir}:\n{tail}",
                        hints=["run `idf.py build` in that folder to see the whole log"])
    build = out_dir / "build"
    from .images import load_flasher_args

    images = load_flasher_args(build)
    return FirmwareResult(out_dir, True, [], [p for _, p in images.files])
