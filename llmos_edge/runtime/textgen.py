"""Token ids -> streamed text: incremental detokenization, stop strings, finish reasons."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .engines.base import GenParams, TextEngine


@dataclass
class GenResult:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "length"
    first_token_s: float | None = None
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None

    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first, over the time after the first (prefill excluded)."""
        if self.first_token_s is None or self.ended is None or self.completion_tokens < 2:
            return None
        span = self.ended - self.started - self.first_token_s
        return (self.completion_tokens - 1) / span if span >= 1e-3 else None


class _Detok:
    """Emit only text that is final: no half UTF-8 sequences, no partial stop strings."""

    def __init__(self, engine: TextEngine, stop: tuple[str, ...]) -> None:
        self.engine, self.stop = engine, stop
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0
        self.text = ""
        self.emitted = 0

    def push(self, token: int) -> None:
        self.ids.append(token)
        before = self.engine.decode(self.ids[self.prefix : self.read])
        after = self.engine.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)

    def stopped_at(self) -> int | None:
        hits = [i for i in (self.text.find(s, max(0, self.emitted - len(s))) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def safe_end(self) -> int:
        """How far text can be released without cutting into a possible stop-string prefix."""
        end = len(self.text)
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    end = min(end, len(self.text) - k)
                    break
        return max(end, self.emitted)

    def take(self, upto: int) -> str:
        piece = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return piece


def stream_text(
    engine: TextEngine, prompt_ids: list[int], params: GenParams, result: GenResult
) -> Iterator[str]:
    """Yield text pieces as they become final; fill `result` (counts, finish reason, timings)."""
    result.prompt_tokens = len(prompt_ids)
    det = _Detok(engine, params.stop)
    gen = engine.generate(prompt_ids, params)
    try:
        for token in gen:
            if result.first_token_s is None:
                result.first_token_s = time.perf_counter() - result.started
            if token in engine.eos_ids:
                result.finish_reason = "stop"
                break
            result.completion_tokens += 1
            det.push(token)
            cut = det.stopped_at()
            if cut is not None:
                result.finish_reason = "stop"
                if piece := det.take(cut):
                    yield piece
                break
            if piece := det.take(det.safe_end()):
                yield piece
            if result.completion_tokens >= params.max_tokens:
                break
        else:
            result.finish_reason = "length"  # the engine ran out of context
        if (result.finish_reason == "length" or det.stopped_at() is None) and (
            piece := det.take(len(det.text))
        ):
            yield piece
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()
        result.ended = time.perf_counter()
        result.text = det.text[: det.emitted]
