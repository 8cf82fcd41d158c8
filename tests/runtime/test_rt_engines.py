"""Engines on real tiny models: parity, sampling determinism, stop strings, chat templates, pooling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmos_edge.runtime.chat import make_renderer, render_with_jinja
from llmos_edge.runtime.descriptor import read_descriptor
from llmos_edge.runtime.engines import REGISTRY, EngineOptions, GenParams, create_engine
from llmos_edge.runtime.errors import ApiError, ConfigError
from llmos_edge.runtime.sampling import Sampler
from llmos_edge.runtime.textgen import GenResult, stream_text

MSGS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def genai(decoder_dir: Path) -> Any:
    return create_engine(decoder_dir, read_descriptor(decoder_dir), EngineOptions())


@pytest.fixture(scope="module")
def plain(plain_decoder_dir: Path) -> Any:
    return create_engine(plain_decoder_dir, read_descriptor(plain_decoder_dir), EngineOptions())


def _prompt(engine: Any) -> list[int]:
    return engine.encode(engine.render_chat(MSGS), add_special_tokens=False)


def _text(engine: Any, params: GenParams) -> tuple[str, GenResult]:
    result = GenResult()
    return "".join(stream_text(engine, _prompt(engine), params, result)), result


def test_registry_covers_descriptor_formats() -> None:
    assert ("onnx-genai", "text-generation") in REGISTRY and ("onnx", "feature-extraction") in REGISTRY


def test_plain_kv_cache_engine_matches_genai_greedy(genai: Any, plain: Any) -> None:
    params = GenParams(max_tokens=24, temperature=0)
    a = list(genai.generate(_prompt(genai), params))[:24]
    b = list(plain.generate(_prompt(plain), params))[:24]
    assert a == b


def test_chat_template_rendering_is_the_same_natively_and_with_jinja(
    genai: Any, plain: Any, decoder_dir: Path
) -> None:
    """onnxruntime-genai's native renderer and jinja2 agree; the prompt ends with the assistant cue."""
    native = genai.render_chat(MSGS)
    assert native == plain.render_chat(MSGS)
    assert "What is the capital of France?" in native


def test_no_invented_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a template chat is refused (400, pointing to /v1/completions); without jinja2 a
    template that needs it is refused (503) instead of being replaced by ChatML."""
    tpl = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{{ eos_token }}"
    msgs = [{"role": "user", "content": "hi"}]
    assert render_with_jinja(tpl, msgs, {"eos_token": "</s>"}) == "[user]hi</s>"
    assert make_renderer("m", tpl, {"eos_token": "</s>"})(msgs) == "[user]hi</s>"
    with pytest.raises(ApiError) as none:
        make_renderer("base", None, {})(msgs)
    assert none.value.status == 400 and "/v1/completions" in none.value.message
    import sys

    monkeypatch.setitem(sys.modules, "jinja2.sandbox", None)  # as on a device without jinja2
    assert render_with_jinja(tpl, msgs, {}) is None
    with pytest.raises(ApiError) as missing:
        make_renderer("m", tpl, {})(msgs)
    assert missing.value.status == 503 and "jinja2" in missing.value.message


@pytest.mark.parametrize("which", ["genai", "plain"])
def test_seeded_sampling_is_deterministic(request: pytest.FixtureRequest, which: str) -> None:
    engine = request.getfixturevalue(which)
    p = GenParams(max_tokens=20, temperature=1.0, top_p=0.95, top_k=50, seed=1234)
    first, _ = _text(engine, p)
    again, _ = _text(engine, p)
    other = [_text(engine, GenParams(max_tokens=20, temperature=1.0, seed=s))[0] for s in (1, 2, 3)]
    assert first == again
    assert len(set(other)) > 1  # different seeds explore different continuations


@pytest.mark.parametrize("which", ["genai", "plain"])
def test_stop_string_cuts_text_and_reports_stop(request: pytest.FixtureRequest, which: str) -> None:
    engine = request.getfixturevalue(which)
    full, _ = _text(engine, GenParams(max_tokens=40, temperature=0))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop) == 3, f"greedy output too short to pick a stop string: {full!r}"
    cut, result = _text(engine, GenParams(max_tokens=40, temperature=0, stop=(stop,)))
    assert cut == full[: full.index(stop)]
    assert result.finish_reason == "stop" and stop not in cut


def test_max_tokens_gives_length(genai: Any) -> None:
    _, result = _text(genai, GenParams(max_tokens=5, temperature=0))
    assert result.completion_tokens == 5 and result.finish_reason == "length"
    assert result.first_token_s is not None and result.prompt_tokens == len(_prompt(genai))


def test_sampler_rules() -> None:
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    assert Sampler(GenParams(temperature=0))(logits, []) == 1
    assert Sampler(GenParams(temperature=1.0, top_k=1, seed=0))(logits, []) == 1
    picks = {Sampler(GenParams(temperature=1.0, top_p=0.01, seed=s))(logits, []) for s in range(20)}
    assert picks == {1}  # nucleus of one token
    picks = {Sampler(GenParams(temperature=1.0, top_k=2, seed=s))(logits, []) for s in range(50)}
    assert picks == {1, 2}
    # a strong repetition penalty moves greedy away from an already-seen token
    assert Sampler(GenParams(temperature=0, repetition_penalty=10.0))(logits, [1]) == 2


def test_encoder_mean_pooling_normalized(encoder_dir: Path) -> None:
    desc = read_descriptor(encoder_dir)
    enc = create_engine(encoder_dir, desc, EngineOptions())
    vecs = np.array(enc.embed(["short", "a much longer sentence about Paris and France", "short"]))
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vecs[0], vecs[2], atol=1e-5)  # padding in a batch does not change the result
    assert np.allclose(vecs[0], enc.embed(["short"])[0], atol=1e-5)
    if desc.embedding and desc.embedding.dim:
        assert vecs.shape[1] == desc.embedding.dim


def test_unsupported_format_is_a_clear_error(decoder_dir: Path, tmp_path: Path) -> None:
    desc = read_descriptor(decoder_dir)
    from dataclasses import replace

    with pytest.raises(ConfigError, match=r"no engine for format 'onnx-genai' \+ task 'feature-extraction'"):
        create_engine(decoder_dir, replace(desc, task="feature-extraction"), EngineOptions())


def test_missing_descriptor_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"llmos_model\.json not found"):
        read_descriptor(tmp_path)


def test_unknown_execution_provider_falls_back_to_cpu(plain_decoder_dir: Path) -> None:
    opts = EngineOptions(providers=("NoSuchExecutionProvider", "CPUExecutionProvider"), threads=1)
    eng = create_engine(plain_decoder_dir, read_descriptor(plain_decoder_dir), opts)
    assert eng.session.get_providers() == ["CPUExecutionProvider"]


def test_genai_engine_falls_back_to_cpu_for_missing_provider(decoder_dir: Path) -> None:
    """A config listing an accelerator this onnxruntime-genai build lacks still loads, on CPU."""
    opts = EngineOptions(providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    eng = create_engine(decoder_dir, read_descriptor(decoder_dir), opts)
    assert len(list(eng.generate(_prompt(eng), GenParams(max_tokens=3, temperature=0)))) >= 1


@pytest.mark.parametrize("fmt", ["onnx-genai", "onnx"])
def test_eos_token_ends_generation_with_stop(decoder_dir: Path, tmp_path: Path, fmt: str) -> None:
    """Declare the 4th greedy token as eos: generation ends there, reason stop, eos not counted."""
    import json
    import shutil

    model = tmp_path / "m"
    shutil.copytree(decoder_dir, model)
    first = create_engine(model, read_descriptor(model), EngineOptions())
    greedy = list(first.generate(_prompt(first), GenParams(max_tokens=8, temperature=0)))[:8]
    eos = greedy[3]
    desc = json.loads((model / "llmos_model.json").read_text())
    (model / "llmos_model.json").write_text(json.dumps({**desc, "format": fmt, "eos_token_ids": [eos]}))
    engine = create_engine(model, read_descriptor(model), EngineOptions())
    _, result = _text(engine, GenParams(max_tokens=8, temperature=0))
    assert result.finish_reason == "stop"
    assert result.completion_tokens == greedy.index(eos)


def test_genai_engine_honours_thread_count(decoder_dir: Path) -> None:
    eng = create_engine(decoder_dir, read_descriptor(decoder_dir), EngineOptions(threads=1))
    assert len(list(eng.generate(_prompt(eng), GenParams(max_tokens=2, temperature=0)))) >= 1
