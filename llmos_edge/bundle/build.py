"""make_bundle: model dirs + target + recipe -> a signed bundle folder and its reproducible image."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..fsutil import atomic_dir, ensure_free_space, sha256_file
from . import manifest as mf
from .encrypt import Sealer, is_weight_file
from .image import write_image_cached
from .keys import key_id, load_signing_key, sign
from .render import render_project, render_recipe_templates
from .spec import BundleResult, BundleSpec

if TYPE_CHECKING:
    from ..spec.models import Golden

_PKG = Path(__file__).resolve().parent.parent
DEVICE_KEY_PATH = "/etc/llmos/device.key"


def make_bundle(spec: BundleSpec, out_dir: Path, *, use_cache: bool = True) -> BundleResult:
    """Write out_dir/<name>-<version>/ and out_dir/<name>-<version>.tar.gz; return both and the manifest."""
    spec.validate()
    if spec.signing_key:
        load_signing_key(spec.signing_key)  # fail on a bad key before copying gigabytes
    stem = f"{spec.bundle_name}-{spec.version}"
    folder, image = out_dir / stem, out_dir / f"{stem}.tar.gz"
    models_size = sum(_tree_size(p) for p in spec.models.values())
    ensure_free_space(out_dir, 2 * models_size + (600 << 20 if spec.wheels else 0), f"bundle {stem}")
    epoch = mf.source_date_epoch()
    image.unlink(missing_ok=True)  # never leave an old image beside a new folder
    with atomic_dir(folder) as tmp:
        manifest = _fill(spec, tmp, epoch)
    # sealed weights differ on every run (fresh nonces): their images are never worth caching
    write_image_cached(folder, image, epoch, use_cache and spec.encrypt_for is None)
    return BundleResult(folder=folder, image=image, manifest=manifest)


def _fill(spec: BundleSpec, root: Path, epoch: int) -> dict[str, Any]:
    sealer = Sealer(spec.encrypt_for) if spec.encrypt_for else None
    model_meta = {mid: _copy_model(src, root / "models" / mid, root, sealer)
                  for mid, src in spec.models.items()}
    _copy_runtime(root / "runtime" / "llmos_runtime")
    if _has_bridge(spec):
        from ..esp32.hostpkg import copy_bridge

        copy_bridge(root / "bridge" / "llmos_bridge")
    ctx = _context(spec, model_meta, epoch, encrypted=sealer is not None)
    for rel, (text, executable) in render_project(spec.target.bundle_kind, ctx).items():
        _write(root / rel, text.encode(), executable)
    _copy_agent(root / "bin" / "llmos-agent")
    _add_recipe_templates(spec, root, ctx)
    wheels = _add_wheels(spec, root, encrypted=sealer is not None)
    manifest = _manifest(spec, root, epoch, wheels, sealer)
    _sign(spec, root, manifest)
    return manifest


def _has_bridge(spec: BundleSpec) -> bool:
    """Host bundles of ESP32 host-offload targets also carry the serial bridge (llmos_bridge)."""
    return spec.target.bundle_kind == "esp32s3-host-offload" and spec.target.esp32 is not None


def _formats(spec: BundleSpec) -> set[str]:
    return {json.loads((p / "llmos_model.json").read_text()).get("format", "") for p in spec.models.values()}


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write(path: Path, data: bytes, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)


def _copy_model(src: Path, dest: Path, root: Path, sealer: Sealer | None) -> dict[str, Any]:
    """Copy one model dir (weights sealed when encrypting); return its descriptor + size."""
    dest.mkdir(parents=True)
    sealed: list[str] = []
    for path in sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = path.relative_to(src)
        if sealer and len(rel.parts) == 1 and is_weight_file(path.name):
            sealer.seal_file(path, dest, root).chmod(0o644)
            sealed.append(path.name)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / rel)
            (dest / rel).chmod(0o644)
    if sealer:
        sealer.write_info(dest, sealed)
    try:
        desc = json.loads((src / "llmos_model.json").read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{src / 'llmos_model.json'} is not valid JSON: {exc}") from exc
    return {"descriptor": desc, "size": _tree_size(src)}


def _copy_runtime(dest: Path) -> None:
    shutil.copytree(_PKG / "runtime", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)


def _copy_agent(dest: Path) -> None:
    """The SSH deploy agent, and beside it the OTA updater (Mender module, RAUC hook) that drives it.

    Both are packed from llmos_edge/device (deterministic bytes; the manifest lists their sha256).
    """
    from ..device import pack
    from ..device.protocol import UPDATER_FILE

    _write(dest, pack.agent_script(), executable=True)
    _write(dest.with_name(Path(UPDATER_FILE).name), pack.updater_script(), executable=True)


def _runtime_config(spec: BundleSpec, model_meta: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from ..spec.loader import deep_merge

    t = spec.target
    # relative to config/: <root>/releases/<version>/config -> <root>/state, wherever deploy put <root>
    state = "../../../state"
    models = [{"id": mid, "path": f"../models/{mid}", "max_concurrency": 1, "max_queue": 8,
               "est_memory_mb": math.ceil(meta["size"] * 2 / 1e6)} for mid, meta in model_meta.items()]
    cfg = {"host": "127.0.0.1", "port": t.service.port, "api_key_env": None,
           "memory_budget_mb": t.budgets.model_ram_mb, "audit_log": f"{state}/requests.jsonl",
           "audit_raw": False, "threads": 0, "models": models,
           "execution_providers": list(t.execution_providers)}
    return deep_merge(cfg, dict(spec.config_overrides))


def _golden(spec: BundleSpec, model_meta: dict[str, dict[str, Any]]) -> dict[str, Any]:
    gen = [m for m, meta in model_meta.items() if meta["descriptor"].get("task", "text-generation")
           == "text-generation"]
    smoke = spec.target.smoke
    return {"model": (gen or list(model_meta))[0],
            "prompts": [_golden_prompt(i, g) for i, g in enumerate(spec.golden)],
            "limits": {"max_first_token_ms": smoke.max_first_token_ms,
                       "min_tokens_per_s": smoke.min_tokens_per_s, "timeout_s": smoke.timeout_s}}


def _golden_prompt(index: int, golden: Golden) -> dict[str, Any]:
    """One golden prompt as a chat request (the runtime's smoke runner sends `messages` as is)."""
    messages = [{"role": "system", "content": golden.system}] if golden.system else []
    messages.append({"role": "user", "content": golden.prompt})
    return {"name": f"golden-{index + 1}", "messages": messages,
            "expect_contains": list(golden.expect_contains), "max_tokens": golden.max_tokens}


def _context(spec: BundleSpec, model_meta: dict[str, dict[str, Any]], epoch: int,
             encrypted: bool) -> dict[str, Any]:
    root = spec.target.install.root
    unit_root = "%h" + root[1:] if root.startswith("~") else root.rstrip("/")
    runtime_config = _runtime_config(spec, model_meta)
    ctx = {"bundle": {"name": spec.bundle_name, "version": spec.version, "recipe": spec.recipe,
                      "created": mf.created_iso(epoch)},
           "target": spec.target, "install_root_unit": unit_root,
           "runtime_config": runtime_config, "golden": _golden(spec, model_meta),
           "models": sorted(model_meta), "encrypted": encrypted,
           "device_key_path": spec.config_overrides.get("device_key") or DEVICE_KEY_PATH}
    if _has_bridge(spec):
        from ..esp32.hostpkg import bridge_context

        ctx["bridge"] = bridge_context(spec.target, runtime_config)
    return ctx


def _add_recipe_templates(spec: BundleSpec, root: Path, ctx: dict[str, Any]) -> None:
    """Recipe templates see plain data only (no Python objects to poke at) and render sandboxed."""
    if not spec.extra_templates:
        return
    plain = {"bundle": ctx["bundle"], "models": ctx["models"], "runtime_config": ctx["runtime_config"],
             "target": spec.target.model_dump(mode="json", exclude={"source_file"})}
    for rel, text in render_recipe_templates(spec.extra_templates, plain, spec.recipe).items():
        if (root / rel).exists():
            raise UserError(f"recipe {spec.recipe!r}: template {rel!r} would overwrite a bundle file",
                            hints=["choose another path for the recipe's template"])
        _write(root / rel, text.encode())


def _add_wheels(spec: BundleSpec, root: Path, encrypted: bool) -> dict[str, Any] | None:
    if not spec.wheels:
        return None
    from .wheels import copy_wheels, fetch_wheels, pinned_requirements

    plat = spec.target.platform
    extra: tuple[str, ...] = ()
    if _has_bridge(spec):
        from ..esp32.hostpkg import BRIDGE_DISTS

        extra = BRIDGE_DISTS
    if _formats(spec) & {"tflite"}:
        extra += ("ai-edge-litert",)  # the LiteRT interpreter for tflite models
    src = fetch_wheels(plat.wheel_platforms, plat.python, encrypted, extra)
    names = copy_wheels(src, root / "wheels")
    return {"platforms": list(plat.wheel_platforms), "python": plat.python,
            "requirements": pinned_requirements(encrypted, plat.python, extra), "files": names}


def _files(root: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel not in mf.NOT_IN_FILES:
                out[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return dict(sorted(out.items()))


def _manifest(spec: BundleSpec, root: Path, epoch: int, wheels: dict[str, Any] | None,
              sealer: Sealer | None) -> dict[str, Any]:
    plat = spec.target.platform
    signing = None
    if spec.signing_key:
        signing = {"algorithm": "ed25519", "key_id": key_id(load_signing_key(spec.signing_key).public_key())}
    return {"schema_version": mf.SCHEMA_VERSION, "bundle_version": spec.version, "name": spec.bundle_name,
            "target": spec.target.name, "bundle_kind": spec.target.bundle_kind, "recipe": spec.recipe,
            "created": mf.created_iso(epoch), "source_model_sha256": spec.source_model_sha256,
            "toolchain_lock": dict(spec.toolchain_lock), "quality_report": dict(spec.quality_report),
            "files": _files(root), "models": sorted(spec.models),
            "platform": {"arch": plat.arch, "libc": plat.libc, "libc_min": plat.libc_min,
                         "python": plat.python},
            "wheels": wheels, "encrypted": sealer.manifest_entry() if sealer else None, "signing": signing}


def _sign(spec: BundleSpec, root: Path, manifest: dict[str, Any]) -> None:
    data = mf.dump(manifest)
    _write(root / mf.MANIFEST, data)
    if spec.signing_key:
        sig, _ = sign(data, spec.signing_key)
        _write(root / mf.SIGNATURE, sig)
