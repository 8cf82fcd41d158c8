"""genai_config_fix (worker side): the config layouts onnxruntime-genai's builder misreads, rewritten
into the layout it reads, and hostile layouts refused with the field named. Pure Python: the worker
module is loaded by path, as the toolchain loads it. SimpleNamespace stands in for the transformers
config object (attribute access is all the fix uses; the real object is exercised by
test_misread_configs.py through the real builder)."""

from __future__ import annotations

import importlib.util
import math
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from llmos_edge.toolchains.contract import WORKERS_DIR


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, WORKERS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fix = _load("genai_config_fix")
worker = _load("genai_worker")


def gemma3(**rope: Any) -> SimpleNamespace:
    """A Gemma 3 config as transformers 5.23 loads it (rope per layer type)."""
    params = rope or {
        "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    }
    return SimpleNamespace(architectures=["Gemma3ForCausalLM"], rope_parameters=params)


def phi3(mpe: int = 4096, ompe: int | None = 2048, **rope: Any) -> SimpleNamespace:
    return SimpleNamespace(
        architectures=["Phi3ForCausalLM"],
        max_position_embeddings=mpe,
        original_max_position_embeddings=ompe,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0},
    )


def test_gemma3_per_layer_type_rope_is_flattened_with_both_thetas() -> None:
    cfg = gemma3()
    changes = fix.normalize(cfg)
    assert cfg.rope_parameters == {"rope_type": "default", "rope_theta": 1_000_000.0}
    assert cfg.rope_theta == 1_000_000.0 and cfg.rope_local_base_freq == 10_000.0
    assert len(changes) == 1 and "1e+06" in changes[0] and "10000" in changes[0]
    assert fix.normalize(cfg) == [], "normalizing twice changes nothing"


def test_gemma3_linear_global_scaling_is_kept_for_the_builder() -> None:
    """Gemma 3 4B+ scales the global RoPE linearly (factor 8); the builder reads 'linear'."""
    cfg = gemma3(
        full_attention={"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        sliding_attention={"rope_type": "default", "rope_theta": 1e4},
    )
    fix.normalize(cfg)
    assert cfg.rope_parameters == {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}


def test_gemma3_flat_layout_and_other_architectures_are_left_alone() -> None:
    flat = {"rope_type": "default", "rope_theta": 1e6}
    cfg = gemma3(**flat)
    assert fix.normalize(cfg) == [] and cfg.rope_parameters == flat
    llama = SimpleNamespace(architectures=["LlamaForCausalLM"], rope_parameters=gemma3().rope_parameters)
    assert fix.normalize(llama) == [] and "full_attention" in llama.rope_parameters
    for archs in (None, [], ["?"]):
        assert fix.normalize(SimpleNamespace(architectures=archs)) == []


@pytest.mark.parametrize(
    ("rope", "field"),
    [
        ({"full_attention": {"rope_theta": 1e6}}, "sliding_attention"),  # one half missing
        ({"full_attention": "1e6", "sliding_attention": {}}, "full_attention"),
        ({"full_attention": [1e6], "sliding_attention": {"rope_theta": 1e4}}, "full_attention"),
        ({"full_attention": {}, "sliding_attention": {"rope_theta": 1e4}}, "full_attention.rope_theta"),
        ({"full_attention": {"rope_theta": -1.0}, "sliding_attention": {"rope_theta": 1e4}}, "rope_theta"),
        ({"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 0}}, "rope_theta"),
        ({"full_attention": {"rope_theta": math.nan}, "sliding_attention": {"rope_theta": 1}}, "rope_theta"),
        ({"full_attention": {"rope_theta": math.inf}, "sliding_attention": {"rope_theta": 1}}, "rope_theta"),
        ({"full_attention": {"rope_theta": True}, "sliding_attention": {"rope_theta": 1}}, "rope_theta"),
        ({"full_attention": {"rope_theta": "1e6"}, "sliding_attention": {"rope_theta": 1}}, "rope_theta"),
        (
            {
                "full_attention": {"rope_theta": 1e6},
                "sliding_attention": {"rope_type": "yarn", "rope_theta": 1},
            },
            "sliding_attention.rope_type",
        ),
        ({"full_attention": {"rope_theta": {"a": {"b": {}}}}, "sliding_attention": {}}, "rope_theta"),
    ],
)
def test_gemma3_hostile_rope_layouts_are_refused_naming_the_field(rope: dict[str, Any], field: str) -> None:
    cfg = gemma3(**rope)
    before = repr(cfg.rope_parameters)
    with pytest.raises(fix.ConfigLayoutError) as info:
        fix.normalize(cfg)
    assert "Gemma3ForCausalLM" in str(info.value) and field in str(info.value)
    assert repr(cfg.rope_parameters) == before, "a refused config is not half rewritten"


def test_phi3_differing_context_fields_without_long_rope_become_plain_rope() -> None:
    cfg = phi3()
    changes = fix.normalize(cfg)
    assert cfg.original_max_position_embeddings == 4096 and cfg.max_position_embeddings == 4096
    assert changes == ["original_max_position_embeddings 2048 -> 4096 (plain RoPE, no LongRoPE factors)"]
    older = phi3(rope_scaling=None)  # a pre-5 config: no rope_parameters at all
    del older.rope_parameters
    assert fix.normalize(older) and older.original_max_position_embeddings == 4096


def test_phi3_long_rope_keeps_its_fields_and_gets_the_key_the_builder_reads() -> None:
    factors = {"long_factor": [1.5] * 8, "short_factor": [1.0] * 8}
    cfg = phi3(131072, 4096, rope_type="longrope", rope_theta=1e4, **factors)
    assert fix.normalize(cfg) == ["rope_parameters.type = 'longrope' (transformers 5 writes only rope_type)"]
    assert cfg.original_max_position_embeddings == 4096 and cfg.rope_parameters["type"] == "longrope"
    legacy = phi3(131072, 4096, type="su", **factors)  # a pre-5 rope_scaling layout
    assert fix.normalize(legacy) == [] and legacy.original_max_position_embeddings == 4096


def test_phi3_equal_or_missing_fields_are_left_alone() -> None:
    for cfg in (phi3(4096, 4096), phi3(4096, None)):
        before = dict(vars(cfg))
        assert fix.normalize(cfg) == [] and vars(cfg) == before


def test_phi3_other_scaling_with_differing_fields_is_refused() -> None:
    with pytest.raises(fix.ConfigLayoutError, match=r"'yarn'.*original_max_position_embeddings 2048"):
        fix.normalize(phi3(rope_type="yarn", factor=2.0))


def test_builder_failure_names_architecture_field_and_place() -> None:
    def builder_like() -> None:
        raise KeyError("rope_type")

    try:
        builder_like()
    except KeyError as exc:
        text = worker.builder_failure("Gemma3ForCausalLM", exc)
    assert "Gemma3ForCausalLM" in text and "'rope_type'" in text
    sentence = worker.builder_failure("Phi3ForCausalLM", KeyError("Missing keys: {'short_factor'}"))
    assert "KeyError: \"Missing keys: {'short_factor'}\"" in sentence
    attr = AttributeError("no attribute", name="rope_local_base_freq")
    assert "'rope_local_base_freq'" in worker.builder_failure("X", attr)
    assert "\n" not in text and "Traceback" not in text
