"""Plain onnxruntime encoder for feature extraction: pooling + normalization per the descriptor."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..descriptor import EmbeddingSpec, ModelDescriptor
from .base import EngineOptions
from .ort_session import make_session
from .tokenizer import load_tokenizer


def pool(hidden: np.ndarray, mask: np.ndarray, spec: EmbeddingSpec) -> np.ndarray:
    """[batch, seq, dim] -> [batch, dim]; a graph that already pools ([batch, dim]) passes through."""
    if hidden.ndim == 2:
        out = hidden
    elif spec.pooling == "cls":
        out = hidden[:, 0]
    else:
        m = mask[..., None].astype(hidden.dtype)
        out = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    if spec.normalize:
        out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
    return out.astype(np.float32)


class OrtEncoderEngine:
    def __init__(self, model_dir: Path, descriptor: ModelDescriptor, options: EngineOptions) -> None:
        self.descriptor = descriptor
        self.spec = descriptor.embedding or EmbeddingSpec()
        self.session = make_session(model_dir / "model.onnx", options, descriptor.name)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = load_tokenizer(model_dir)
        self.tokenizer.enable_truncation(self.spec.max_length)
        self.tokenizer.enable_padding()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def embed(self, texts: list[str]) -> list[list[float]]:
        encs = self.tokenizer.encode_batch(texts)
        arrays = {
            "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64),
        }
        feeds = {n: arrays[n] for n in self.input_names if n in arrays}
        hidden = self.session.run(None, feeds)[0]
        vectors: list[list[float]] = pool(hidden, arrays["attention_mask"], self.spec).tolist()
        return vectors

    def close(self) -> None:
        self.session = None
