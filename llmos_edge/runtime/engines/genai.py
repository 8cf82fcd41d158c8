"""onnxruntime-genai engine: its native generator loop (fused graph, shared KV buffer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..chat import make_renderer
from ..descriptor import ModelDescriptor
from ..errors import ConfigError
from .base import EngineOptions, GenParams
from .tokenizer import encode, load_tokenizer, special_tokens


def _og_config(og: Any, model_dir: Path, options: EngineOptions) -> Any:
    cfg = og.Config(str(model_dir))
    if options.threads > 0:
        cfg.overlay(
            json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": options.threads}}}})
        )
    cfg.clear_providers()
    for p in options.providers:
        name = p.removesuffix("ExecutionProvider").lower()
        if name not in ("cpu", ""):
            cfg.append_provider(name)  # onnxruntime-genai falls back to CPU for unsupported ops
    return cfg


def _load_model(og: Any, model_dir: Path, options: EngineOptions) -> Any:
    """Configured providers first; if that fails (provider missing on this device), plain CPU."""
    try:
        return og.Model(_og_config(og, model_dir, options))
    except Exception:
        if all(p == "CPUExecutionProvider" for p in options.providers):
            raise
        return og.Model(_og_config(og, model_dir, EngineOptions(("CPUExecutionProvider",), options.threads)))


def _clamp_context(model_dir: Path, descriptor: ModelDescriptor) -> ModelDescriptor:
    """The usable context is the smaller of the descriptor's and genai_config's (og refuses more)."""
    try:
        og_ctx = int(json.loads((model_dir / "genai_config.json").read_text())["model"]["context_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return descriptor
    return replace(descriptor, context_length=min(descriptor.context_length, og_ctx))


class GenaiEngine:
    def __init__(self, model_dir: Path, descriptor: ModelDescriptor, options: EngineOptions) -> None:
        import onnxruntime_genai as og

        self.og, self.descriptor = og, _clamp_context(model_dir, descriptor)
        try:
            self.model = _load_model(og, model_dir, options)
        except Exception as exc:  # og raises plain RuntimeError for any load problem
            raise ConfigError(
                f"model {descriptor.name}: onnxruntime-genai could not load {model_dir}: {exc}"
            ) from exc
        self.og_tokenizer = og.Tokenizer(self.model)
        self.tokenizer = load_tokenizer(model_dir)
        eos = descriptor.eos_token_ids or tuple(int(x) for x in self.og_tokenizer.eos_token_ids)
        self.eos_ids = frozenset(eos)
        self.render_chat = make_renderer(
            descriptor.name, descriptor.chat_template, special_tokens(model_dir), self._native_template
        )
        self._warmup()

    def _warmup(self) -> None:
        """One token at load time: onnxruntime-genai's first generation is ~0.5 s slower than the rest."""
        for _ in self.generate([min(self.eos_ids, default=0)], GenParams(max_tokens=1, temperature=0)):
            break

    def _native_template(self, messages_json: str, template: str) -> str:
        out: str = self.og_tokenizer.apply_chat_template(
            messages_json, template_str=template, add_generation_prompt=True
        )
        return out

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return encode(self.tokenizer, text, add_special_tokens, self.descriptor.bos_token_id)

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def _search_options(self, n_prompt: int, params: GenParams) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "max_length": min(self.descriptor.context_length, n_prompt + params.max_tokens + 1),
            "do_sample": not params.greedy,
            "repetition_penalty": params.repetition_penalty,
        }
        if not params.greedy:
            opts.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or 0)
            if params.seed is not None:
                opts["random_seed"] = params.seed
        return opts

    def generate(self, prompt_ids: list[int], params: GenParams) -> Iterator[int]:
        gp = self.og.GeneratorParams(self.model)
        gp.set_search_options(**self._search_options(len(prompt_ids), params))
        gen = self.og.Generator(self.model, gp)
        try:
            gen.append_tokens(prompt_ids)
            while not gen.is_done():
                gen.generate_next_token()
                yield int(gen.get_next_tokens()[0])
        finally:
            del gen

    def close(self) -> None:
        self.model = None
