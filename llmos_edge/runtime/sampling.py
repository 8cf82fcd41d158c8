"""Numpy next-token selection for engines without a native sampler."""

from __future__ import annotations

import numpy as np

from .engines.base import GenParams


class Sampler:
    def __init__(self, params: GenParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, seen: list[int]) -> int:
        p = self.params
        x = logits.astype(np.float64, copy=True)
        if p.repetition_penalty != 1.0 and seen:
            idx = np.unique(np.asarray(seen, dtype=np.int64))
            vals = x[idx]
            x[idx] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if p.greedy:
            return int(np.argmax(x))
        x = x / p.temperature
        if 0 < p.top_k < x.size:
            kth = np.partition(x, -p.top_k)[-p.top_k]
            x = np.where(x < kth, -np.inf, x)
        probs = np.exp(x - np.max(x))
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs)
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, p.top_p)) + 1]
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(self.rng.choice(probs.size, p=probs))
