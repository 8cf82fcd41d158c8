"""Config layouts onnxruntime-genai 0.18's builder misreads, rewritten into the layout it reads.

Runs inside the onnx-genai toolchain (plain Python, never imports llmos_edge). It edits the config
object the builder holds (builder.parse_extra_options -> hf_details["hf_config"]), not a file:
transformers 5 re-nests Gemma 3's RoPE parameters whenever it reads config.json, so no file rewrite
reaches the builder, and the weights are still loaded by transformers from the untouched folder.

- Gemma 3: transformers 5 writes rope_parameters = {"full_attention": {...}, "sliding_attention":
  {...}}; the builder reads rope_parameters["rope_type"], the global theta from rope_theta and the
  local one from rope_local_base_freq.
- Phi-3: max_position_embeddings != original_max_position_embeddings sends the builder down its
  LongRoPE path, which needs LongRoPE factors; without them the model uses plain RoPE, so the two
  context fields are equal in meaning. With LongRoPE, the builder reads rope_parameters["type"],
  which transformers 5 no longer writes (KeyError 'type').
"""

from __future__ import annotations

import math
from typing import Any

PER_LAYER_TYPES = ("full_attention", "sliding_attention")
_LONGROPE = ("longrope", "su")


class ConfigLayoutError(Exception):
    """A layout the builder cannot represent: names the field for the user."""


def rope_dict(config: Any) -> dict[str, Any] | None:
    """rope_parameters (transformers 5) or rope_scaling (older configs), when it is a mapping."""
    for name in ("rope_parameters", "rope_scaling"):
        value = getattr(config, name, None)
        if isinstance(value, dict):
            return value
    return None


def _gemma3(config: Any, arch: str) -> list[str]:
    rope = getattr(config, "rope_parameters", None)
    if not isinstance(rope, dict) or not any(k in rope for k in PER_LAYER_TYPES):
        return []
    full, local = rope.get("full_attention"), rope.get("sliding_attention")
    for name, part in (("full_attention", full), ("sliding_attention", local)):
        if not isinstance(part, dict):
            raise ConfigLayoutError(f"{arch}: rope_parameters.{name} must be a mapping, got {part!r}")
    assert isinstance(full, dict) and isinstance(local, dict)
    local_type = local.get("rope_type", "default")
    if local_type != "default":
        raise ConfigLayoutError(
            f"{arch}: rope_parameters.sliding_attention.rope_type is {local_type!r}; the builder gives "
            "sliding layers plain RoPE only"
        )
    global_theta, local_theta = _theta(full, arch, "full_attention"), _theta(local, arch, "sliding_attention")
    flat = dict(full)
    flat.setdefault("rope_type", "default")
    flat["rope_theta"] = global_theta
    config.rope_parameters = flat
    config.rope_theta = global_theta
    config.rope_local_base_freq = local_theta
    return [
        f"rope_parameters per layer type -> {flat['rope_type']} RoPE, theta {global_theta:g} "
        f"(full attention), {local_theta:g} (sliding)"
    ]


def _theta(part: dict[str, Any], arch: str, name: str) -> float:
    theta = part.get("rope_theta")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < theta < math.inf:
        raise ConfigLayoutError(
            f"{arch}: rope_parameters.{name}.rope_theta must be a positive number, got {theta!r}"
        )
    return float(theta)


def _phi3(config: Any, arch: str) -> list[str]:
    mpe = getattr(config, "max_position_embeddings", None)
    ompe = getattr(config, "original_max_position_embeddings", None)
    if mpe is None or ompe is None or mpe == ompe:
        return []
    rope = rope_dict(config) or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind in _LONGROPE:  # real LongRoPE: the builder's path, which reads the pre-5 "type" key
        if "type" in rope:
            return []
        rope["type"] = kind
        return [f"rope_parameters.type = {kind!r} (transformers 5 writes only rope_type)"]
    if kind != "default":
        raise ConfigLayoutError(
            f"{arch}: rope type {kind!r} with original_max_position_embeddings {ompe} != "
            f"max_position_embeddings {mpe} is neither plain RoPE nor LongRoPE"
        )
    config.original_max_position_embeddings = mpe
    return [f"original_max_position_embeddings {ompe} -> {mpe} (plain RoPE, no LongRoPE factors)"]


FIXES = {
    "Gemma3ForCausalLM": _gemma3,
    "Phi3ForCausalLM": _phi3,
}


def normalize(config: Any) -> list[str]:
    """Rewrite `config` (in place) into the layout the builder reads; return what changed."""
    archs = getattr(config, "architectures", None) or []
    arch = str(archs[0]) if archs else "?"
    fix = FIXES.get(arch)
    return fix(config, arch) if fix else []
