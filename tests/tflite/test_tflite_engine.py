"""The LiteRT engines on real (tiny, committed) int8 TFLite graphs: numerics vs torch, KV cache
handling, and the clear errors a bad model or a bad prompt must give."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmos_edge.runtime.descriptor import read_descriptor
from llmos_edge.runtime.engine_tflite import TFLiteDecoderEngine, TFLiteEncoderEngine
from llmos_edge.runtime.engines.base import EngineOptions, GenParams
from llmos_edge.runtime.errors import ApiError, ConfigError

# dynamic int8 of a random hidden-64 model: measured max |diff| 0.009 for logits of scale ~1.3
LOGIT_ATOL = 0.05


def _decoder(path: Path) -> TFLiteDecoderEngine:
    return TFLiteDecoderEngine(path, read_descriptor(path), EngineOptions(threads=1))


def _encoder(path: Path) -> TFLiteEncoderEngine:
    return TFLiteEncoderEngine(path, read_descriptor(path), EngineOptions(threads=1))


def test_decoder_logits_match_torch(tiny_decoder: Path, decoder_ref: dict[str, np.ndarray]) -> None:
    eng = _decoder(tiny_decoder)
    got = eng.logits([int(i) for i in decoder_ref["ids"]])
    ref = decoder_ref["logits"]
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max()) < LOGIT_ATOL
    assert (got.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("n", [1, 2, 8, 9, 10, 17, 20])
def test_chunked_prefill_equals_token_by_token(
    tiny_decoder: Path, decoder_ref: dict[str, np.ndarray], n: int
) -> None:
    """prefill_8 runs padded/partial chunks; its cache must give the same next token as pure decode."""
    eng = _decoder(tiny_decoder)
    ids = [int(i) for i in decoder_ref["ids"][:n]]
    first = next(iter(eng.generate(ids, GenParams(max_tokens=1, temperature=0))))
    assert first == int(eng.logits(ids)[-1].argmax())


def test_generation_stops_at_cache_end(tiny_decoder: Path) -> None:
    eng = _decoder(tiny_decoder)
    assert eng.cache_length == 64
    out = list(eng.generate([5] * 60, GenParams(max_tokens=100, temperature=0)))
    assert len(out) == 64 - 60 + 1  # positions 60..63 fit; the token decoded at 63 is the last


def test_sampling_is_seeded(tiny_decoder: Path) -> None:
    eng = _decoder(tiny_decoder)
    p = GenParams(max_tokens=12, temperature=1.5, seed=7)
    a, b = list(eng.generate([5, 9, 33], p)), list(eng.generate([5, 9, 33], p))
    assert a == b and len(a) == 12


def test_prompt_longer_than_cache_is_refused(tiny_decoder: Path) -> None:
    eng = _decoder(tiny_decoder)
    with pytest.raises(ApiError) as err:
        next(iter(eng.generate(list(range(3, 73)), GenParams(max_tokens=4))))
    assert err.value.status == 400 and err.value.code == "context_length_exceeded"
    assert "70 tokens" in err.value.message and "64-token KV cache" in err.value.message


def test_missing_decode_signature_is_named(tiny_decoder: Path, tiny_encoder: Path) -> None:
    shutil.copyfile(tiny_encoder / "model.tflite", tiny_decoder / "model.tflite")
    want = r"no signature 'decode' \(it has: \['serving_default'\]\).*rebuild"
    with pytest.raises(ConfigError, match=want):
        _decoder(tiny_decoder)


def test_corrupt_model_file(tiny_decoder: Path) -> None:
    (tiny_decoder / "model.tflite").write_bytes(b"not a flatbuffer" * 64)
    with pytest.raises(ConfigError, match=r"LiteRT cannot load model\.tflite"):
        _decoder(tiny_decoder)


def test_missing_model_file(tiny_decoder: Path) -> None:
    (tiny_decoder / "model.tflite").unlink()
    with pytest.raises(ConfigError, match=r"not found; rebuild with --format tflite"):
        _decoder(tiny_decoder)


def test_chat_template_and_eos(tiny_decoder: Path) -> None:
    eng = _decoder(tiny_decoder)
    text = eng.render_chat([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert eng.eos_ids == frozenset({1})
    assert eng.decode(eng.encode("héllo wörld", add_special_tokens=False)) == "héllo wörld"


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def test_encoder_cosine_to_torch(tiny_encoder: Path, encoder_ref: tuple[list[str], np.ndarray]) -> None:
    texts, ref = encoder_ref
    eng = _encoder(tiny_encoder)
    assert eng.seq_len == 16
    assert eng.count_tokens(texts[2]) > 16  # the long one is chunked, not truncated
    got = np.asarray(eng.embed(texts))
    assert got.shape == ref.shape
    cos = _cos(got, ref)
    assert cos[:2].min() >= 0.99, cos
    assert cos[2] >= 0.95, cos  # chunk-averaged vs one full-length torch pass
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_encoder_padding_does_not_change_embedding(tiny_encoder: Path) -> None:
    """Pad positions are masked inside the graph's pooling: same text, same vector."""
    eng = _encoder(tiny_encoder)
    a = np.asarray(eng.embed(["paris"]))
    b = np.asarray(eng.embed(["paris", "the capital of france is paris"]))[:1]
    assert np.allclose(a, b, atol=1e-6)


def test_encoder_wrong_signature(tiny_encoder: Path, tiny_decoder: Path) -> None:
    shutil.copyfile(tiny_decoder / "model.tflite", tiny_encoder / "model.tflite")
    with pytest.raises(ConfigError, match="no signature 'serving_default'"):
        _encoder(tiny_encoder)


def test_descriptor_says_tflite(tiny_decoder: Path, tiny_encoder: Path) -> None:
    dec = json.loads((tiny_decoder / "llmos_model.json").read_text())
    enc = json.loads((tiny_encoder / "llmos_model.json").read_text())
    assert (dec["format"], dec["task"], dec["quant"], dec["context_length"]) == (
        "tflite",
        "text-generation",
        "int8",
        64,
    )
    assert (enc["format"], enc["task"]) == ("tflite", "feature-extraction")
    assert enc["embedding"]["pooling"] == "mean" and enc["embedding"]["max_length"] == 16
