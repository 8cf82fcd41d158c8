"""TFLite (LiteRT) engines: a KV-cache decoder over prefill_N/decode signatures, and a fixed-length encoder.

Uses ai_edge_litert's Interpreter (tflite-runtime 2.14 cannot run litert-torch graphs and needs
numpy<2; see docs/tflite.md). XNNPACK, LiteRT's default CPU delegate, is always on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .chat import make_renderer
from .descriptor import EmbeddingSpec, ModelDescriptor
from .engines.base import EngineOptions, GenParams
from .engines.tokenizer import encode, load_tokenizer, special_tokens
from .errors import ApiError, ConfigError
from .sampling import Sampler

_MASK_MIN = float(np.finfo(np.float32).min) / 2  # additive "do not attend"; /2 keeps sums finite
_PREFILL = re.compile(r"^prefill_(\d+)$")


def load_interpreter(path: Path, options: EngineOptions, name: str) -> Any:
    """Open a .tflite with LiteRT; a missing library or file becomes a ConfigError that says what to do."""
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError as exc:
        raise ConfigError(
            f"model {name}: format tflite needs the ai-edge-litert package "
            "(pip install ai-edge-litert); tflite-runtime cannot run these models"
        ) from exc
    if not path.is_file():
        raise ConfigError(f"model {name}: {path} not found; rebuild with --format tflite")
    try:  # AUTO = builtin ops + XNNPACK, LiteRT's CPU delegate (what rpi5-litert's providers ask for)
        return litert.Interpreter(
            model_path=str(path),
            num_threads=options.threads or None,
            experimental_op_resolver_type=litert.OpResolverType.AUTO,
        )
    except ValueError as exc:
        raise ConfigError(f"model {name}: LiteRT cannot load {path.name}: {exc}") from exc


def signature(interp: Any, wanted: str, name: str) -> dict[str, list[str]]:
    """The named signature's input/output names, or a ConfigError naming what the model does have."""
    sigs: dict[str, dict[str, list[str]]] = interp.get_signature_list()
    if wanted not in sigs:
        raise ConfigError(
            f"model {name}: model.tflite has no signature {wanted!r} (it has: {sorted(sigs) or 'none'}); "
            "it was not exported by llmos-edge's tflite stage: "
            "rebuild with `llmos-edge build --format tflite`"
        )
    return sigs[wanted]


class TFLiteDecoderEngine:
    """litert-torch generative graphs: k [1,H,C,D] / v [1,H,D,C] caches passed in and out each call."""

    def __init__(self, model_dir: Path, descriptor: ModelDescriptor, options: EngineOptions) -> None:
        self.descriptor = descriptor
        self.interp = load_interpreter(model_dir / "model.tflite", options, descriptor.name)
        sigs = self.interp.get_signature_list()
        signature(self.interp, "decode", descriptor.name)
        self.prefill_lengths = sorted(int(m.group(1)) for s in sigs if (m := _PREFILL.match(s)))
        if not self.prefill_lengths:
            signature(self.interp, "prefill_<N>", descriptor.name)
        self.decode_runner = self.interp.get_signature_runner("decode")
        self.prefills = {n: self.interp.get_signature_runner(f"prefill_{n}") for n in self.prefill_lengths}
        details = self.decode_runner.get_input_details()
        self.kv_specs = {
            k: (tuple(int(x) for x in d["shape"]), d["dtype"])
            for k, d in details.items()
            if k.startswith("kv_cache")
        }
        self.cache_length = int(details["mask"]["shape"][-1])
        self.tokenizer = load_tokenizer(model_dir)
        self.eos_ids = frozenset(descriptor.eos_token_ids)
        self.render_chat = make_renderer(descriptor.name, descriptor.chat_template, special_tokens(model_dir))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return encode(self.tokenizer, text, add_special_tokens, self.descriptor.bos_token_id)

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def _empty_cache(self) -> dict[str, np.ndarray]:
        return {k: np.zeros(shape, dtype=dtype) for k, (shape, dtype) in self.kv_specs.items()}

    def _mask(self, start: int, rows: int) -> np.ndarray:
        """Additive causal mask [1,1,rows,C]: row i sees cache columns <= start+i."""
        cols = np.arange(self.cache_length)[None, :]
        allowed = cols <= (start + np.arange(rows))[:, None]
        return np.where(allowed, 0.0, _MASK_MIN).astype(np.float32)[None, None]

    def _step(
        self, runner: Any, tokens: list[int], start: int, cache: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        pos = np.minimum(np.arange(start, start + rows), self.cache_length - 1).astype(np.int32)
        toks = np.zeros((1, rows), dtype=np.int32)
        toks[0, : len(tokens)] = tokens
        try:
            out: dict[str, np.ndarray] = runner(
                tokens=toks, input_pos=pos, mask=self._mask(start, rows), **cache
            )
        except RuntimeError as exc:  # LiteRT prepares (and can refuse) the graph on its first call
            raise ConfigError(
                f"model {self.descriptor.name}: LiteRT cannot run model.tflite: {str(exc)[:300]}; "
                "rebuild with --quant int8 (the verified default)"
            ) from exc
        cache.update({k: out[k] for k in self.kv_specs})
        return out

    def _prefill(self, ids: list[int], cache: dict[str, np.ndarray]) -> None:
        """Fill the cache with `ids` in chunks of the largest prefill signature (last chunk padded)."""
        n = self.prefill_lengths[-1]
        for start in range(0, len(ids), n):
            chunk = ids[start : start + n]
            size = next((p for p in self.prefill_lengths if p >= len(chunk)), n)
            self._step(self.prefills[size], chunk, start, cache, size)

    def check_fits(self, n_prompt: int) -> None:
        """A prompt must leave room for one generated token in the fixed-size cache."""
        if n_prompt >= self.cache_length:
            raise ApiError(
                400,
                f"prompt is {n_prompt} tokens but model {self.descriptor.name!r} has a "
                f"{self.cache_length}-token KV cache (fixed at export); shorten the prompt or "
                "rebuild with a larger context_length",
                param="messages",
                code="context_length_exceeded",
            )

    def generate(self, prompt_ids: list[int], params: GenParams) -> Iterator[int]:
        if not prompt_ids:
            raise ApiError(400, "the prompt is empty", param="prompt", code="invalid_value")
        self.check_fits(len(prompt_ids))
        sampler, seen = Sampler(params), list(prompt_ids)
        cache = self._empty_cache()
        self._prefill(prompt_ids[:-1], cache)
        pos, token = len(prompt_ids) - 1, prompt_ids[-1]
        for _ in range(params.max_tokens):
            if pos >= self.cache_length:
                return  # cache full: textgen reports finish_reason "length"
            logits = self._step(self.decode_runner, [token], pos, cache, 1)["logits"]
            token = sampler(logits.reshape(-1, logits.shape[-1])[-1], seen)
            seen.append(token)
            pos += 1
            yield token

    def logits(self, ids: list[int]) -> np.ndarray:
        """[len(ids), vocab] next-token logits, one decode step per token (quality gate, tests)."""
        self.check_fits(len(ids))
        cache, rows = self._empty_cache(), []
        for pos, token in enumerate(ids):
            out = self._step(self.decode_runner, [token], pos, cache, 1)["logits"]
            rows.append(out.reshape(-1, out.shape[-1])[-1])
        return np.stack(rows).astype(np.float32)

    def perplexity(self, ids: list[int]) -> float:
        """exp(mean NLL) of ids[1:] given the prefix, within one cache window."""
        ids = ids[: self.cache_length - 1]
        x = self.logits(ids[:-1]).astype(np.float64)
        x -= x.max(axis=1, keepdims=True)
        logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        nll = -logp[np.arange(len(ids) - 1), np.asarray(ids[1:])]
        return float(np.exp(nll.mean()))

    def close(self) -> None:
        self.interp = None


class TFLiteEncoderEngine:
    """Fixed-length encoder with pooling in the graph: inputs padded, or chunked and averaged."""

    def __init__(self, model_dir: Path, descriptor: ModelDescriptor, options: EngineOptions) -> None:
        self.descriptor = descriptor
        self.spec = descriptor.embedding or EmbeddingSpec()
        self.interp = load_interpreter(model_dir / "model.tflite", options, descriptor.name)
        sigs = self.interp.get_signature_list()
        if len(sigs) != 1:
            signature(self.interp, "serving_default", descriptor.name)
        self.runner = self.interp.get_signature_runner(
            next(iter(sigs)) if len(sigs) == 1 else "serving_default"
        )
        details = self.runner.get_input_details()
        if len(details) != 2:
            raise ConfigError(
                f"model {descriptor.name}: encoder signature must take (input_ids, attention_mask);"
                f" it takes {sorted(details)}"
            )
        names = sorted(details, key=lambda k: details[k]["index"])
        self.ids_name, self.mask_name = names[0], names[1]
        self.seq_len = int(details[self.ids_name]["shape"][-1])
        self.tokenizer = load_tokenizer(model_dir)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def _chunks(self, ids: list[int]) -> list[list[int]]:
        """Split a long sequence into signature-sized windows that keep the first/last special ids."""
        if len(ids) <= self.seq_len:
            return [ids]
        head, body, tail = ids[:1], ids[1:-1], ids[-1:]
        step = self.seq_len - 2
        return [head + body[i : i + step] + tail for i in range(0, len(body), step)]

    def _run(self, ids: list[int]) -> np.ndarray:
        toks = np.zeros((1, self.seq_len), dtype=np.int32)
        mask = np.zeros((1, self.seq_len), dtype=np.int32)
        toks[0, : len(ids)] = ids
        mask[0, : len(ids)] = 1
        out = self.runner(**{self.ids_name: toks, self.mask_name: mask})
        return np.asarray(next(iter(out.values())), dtype=np.float32).reshape(-1)

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = []
        for text in texts:
            chunks = self._chunks(self.tokenizer.encode(text).ids)
            weights = np.asarray([len(c) for c in chunks], dtype=np.float32)
            vec = (np.stack([self._run(c) for c in chunks]) * weights[:, None]).sum(0) / weights.sum()
            if self.spec.normalize:
                vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
            vectors.append(vec.astype(np.float32).tolist())
        return vectors

    def close(self) -> None:
        self.interp = None
