"""The interface every engine implements, and the generation parameters they share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..descriptor import ModelDescriptor


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1


@dataclass(frozen=True)
class EngineOptions:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 0


class TextEngine(Protocol):
    """A decoder: token ids in, token ids out; text handling lives in textgen.py."""

    descriptor: ModelDescriptor
    eos_ids: frozenset[int]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def render_chat(self, messages: list[dict[str, Any]]) -> str: ...

    def generate(self, prompt_ids: list[int], params: GenParams) -> Iterator[int]: ...

    def close(self) -> None: ...


class EmbedEngine(Protocol):
    descriptor: ModelDescriptor

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...

    def close(self) -> None: ...


Engine = TextEngine | EmbedEngine


class EngineFactory(Protocol):
    def __call__(self, model_dir: Path, descriptor: ModelDescriptor, options: EngineOptions) -> Any: ...


def pick_providers(wanted: tuple[str, ...], available: list[str]) -> list[str]:
    """Configured providers in order, those this onnxruntime has, always ending in CPU."""
    chosen = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]
