"""Plain onnxruntime decoder with a KV cache (optimum-style graphs) and numpy sampling."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..chat import make_renderer
from ..descriptor import ModelDescriptor
from ..errors import ConfigError
from ..sampling import Sampler
from .base import EngineOptions, GenParams
from .ort_session import make_session
from .tokenizer import encode, load_tokenizer, special_tokens

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _head_dim(model_dir: Path, declared: Any) -> int:
    """KV head size: from the graph when static, else genai_config.json / config.json."""
    if isinstance(declared, int):
        return declared
    for name, keys in (
        ("genai_config.json", ("model", "decoder", "head_size")),
        ("config.json", ("head_dim",)),
    ):
        path = model_dir / name
        if path.exists():
            node: Any = json.loads(path.read_text())
            for k in keys:
                node = node.get(k) if isinstance(node, dict) else None
            if isinstance(node, int):
                return node
    cfg = model_dir / "config.json"
    if cfg.exists():
        raw = json.loads(cfg.read_text())
        return int(raw["hidden_size"]) // int(raw["num_attention_heads"])
    raise ConfigError(f"{model_dir}: cannot tell the KV head size; add config.json or genai_config.json")


class OrtDecoderEngine:
    def __init__(self, model_dir: Path, descriptor: ModelDescriptor, options: EngineOptions) -> None:
        self.descriptor = descriptor
        self.session = make_session(model_dir / "model.onnx", options, descriptor.name)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "input_ids" not in inputs:
            raise ConfigError(f"model {descriptor.name}: graph has no input_ids input; not a decoder")
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.has_mask = "attention_mask" in inputs
        self.has_pos = "position_ids" in inputs
        self.kv_shapes: dict[str, tuple[int, int]] = {}
        for n in self.past_names:
            shape = inputs[n].shape
            self.kv_shapes[n] = (int(shape[1]), _head_dim(model_dir, shape[3]))
        self.kv_dtype = (
            _DTYPES.get(inputs[self.past_names[0]].type, np.float32) if self.past_names else np.float32
        )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.tokenizer = load_tokenizer(model_dir)
        self.eos_ids = frozenset(descriptor.eos_token_ids)
        self.render_chat = make_renderer(descriptor.name, descriptor.chat_template, special_tokens(model_dir))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return encode(self.tokenizer, text, add_special_tokens, self.descriptor.bos_token_id)

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def _feeds(self, new: list[int], total: int, past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {"input_ids": np.asarray([new], dtype=np.int64)}
        if self.has_mask:
            feeds["attention_mask"] = np.ones((1, total), dtype=np.int64)
        if self.has_pos:
            feeds["position_ids"] = np.arange(total - len(new), total, dtype=np.int64)[None, :]
        feeds.update(past)
        return feeds

    def _empty_past(self) -> dict[str, np.ndarray]:
        return {n: np.zeros((1, h, 0, d), dtype=self.kv_dtype) for n, (h, d) in self.kv_shapes.items()}

    def generate(self, prompt_ids: list[int], params: GenParams) -> Iterator[int]:
        sampler = Sampler(params)
        seen = list(prompt_ids)
        past, new = self._empty_past(), list(prompt_ids)
        limit = min(self.descriptor.context_length, len(prompt_ids) + params.max_tokens)
        while len(seen) < limit:
            outs = self.session.run(self.output_names, self._feeds(new, len(seen), past))
            named = dict(zip(self.output_names, outs, strict=True))
            past = {n: named[n.replace("past_key_values.", "present.")] for n in self.past_names}
            token = sampler(named["logits"][0, -1], seen)
            seen.append(token)
            new = [token]
            yield token

    def close(self) -> None:
        self.session = None
