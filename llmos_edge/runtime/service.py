"""The runtime's library API: models + metrics + audit, independent of HTTP (the CLI uses it too)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .api import TextRequest, parse_embedding_input
from .audit import AuditLog
from .chat import completion_only
from .config import RuntimeConfig
from .engines.base import GenParams
from .errors import ApiError, bad_param
from .metrics import Metrics
from .models import ModelManager
from .textgen import GenResult, stream_text


class Runtime:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.manager = ModelManager(config)
        self.metrics = Metrics()
        self.metrics.gauges.append(self.manager.gauges)
        self.audit = AuditLog(config.audit_log, config.audit_raw)

    def model_ids(self) -> list[str]:
        return list(self.manager.entries)

    def list_models(self) -> dict[str, Any]:
        data = []
        for mid in self.model_ids():
            item: dict[str, Any] = {"id": mid, "object": "model", "created": 0, "owned_by": "llmos-edge"}
            with contextlib.suppress(ApiError):
                d = self.manager.descriptor(mid)
                item.update(
                    task=d.task, mode=d.mode, format=d.format, quant=d.quant, context_length=d.context_length
                )
            item["loaded"] = mid in self.manager.loaded
            data.append(item)
        return {"object": "list", "data": data}

    def _check_task(self, model: str, task: str, kind: str | None = None) -> None:
        """The endpoint must fit the model: task, and for decoders chat vs completion (before loading)."""
        desc = self.manager.descriptor(model)
        if desc.task != task:
            what = "an embedding model" if desc.task == "feature-extraction" else "a text-generation model"
            raise bad_param("model", f"model {model!r} is {what}; it does not serve this endpoint")
        if kind == "chat" and desc.prompt_format == "completion":
            raise completion_only(model)

    def default_max_tokens(self, model: str) -> int:
        return min(256, self.manager.descriptor(model).context_length)

    @contextlib.contextmanager
    def text_session(self, req: TextRequest) -> Iterator[tuple[Iterator[str], GenResult]]:
        """Admit, load, tokenize and check the prompt (errors raise here), then yield the token stream."""
        self._check_task(req.model, "text-generation", req.kind)
        with self.manager.use(req.model) as engine:
            if req.kind == "chat":
                ids = engine.encode(engine.render_chat(req.messages), add_special_tokens=False)
            else:
                ids = engine.encode(req.prompt or "")
            ctx = engine.descriptor.context_length
            if not ids:
                raise bad_param("prompt", "the prompt is empty")
            if len(ids) >= ctx:
                raise ApiError(
                    400,
                    f"prompt is {len(ids)} tokens; model {req.model!r} context is {ctx} tokens",
                    param="messages" if req.kind == "chat" else "prompt",
                    code="context_length_exceeded",
                )
            p = req.params
            req.params = GenParams(
                min(p.max_tokens, ctx - len(ids)),
                p.temperature,
                p.top_p,
                p.top_k,
                p.repetition_penalty,
                p.seed,
                p.stop,
            )
            result = GenResult()
            pieces = stream_text(engine, ids, req.params, result)
            try:
                yield pieces, result
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()

    def embed(self, model: str, body: dict[str, Any]) -> tuple[list[list[float]], int]:
        texts = parse_embedding_input(body)
        self._check_task(model, "feature-extraction")
        with self.manager.use(model) as engine:
            n_tokens = sum(engine.count_tokens(t) for t in texts)
            return engine.embed(texts), n_tokens

    def record(
        self,
        *,
        endpoint: str,
        model: str | None,
        status: int,
        latency_s: float,
        client: str,
        prompt: str | None = None,
        result: GenResult | None = None,
        prompt_tokens: int = 0,
    ) -> None:
        """Metrics and the audit line for one finished request."""
        m = model or ""
        self.metrics.inc("llmos_requests_total", endpoint=endpoint, model=m, status=str(status))
        self.metrics.observe_latency(latency_s, model=m)
        p_n = result.prompt_tokens if result else prompt_tokens
        c_n = result.completion_tokens if result else 0
        if p_n:
            self.metrics.inc("llmos_tokens_total", p_n, model=m, kind="prompt")
        if c_n:
            self.metrics.inc("llmos_tokens_total", c_n, model=m, kind="completion")
        fields: dict[str, Any] = {
            "endpoint": endpoint,
            "model": model,
            "status": status,
            "client": client,
            "latency_ms": round(latency_s * 1000, 1),
            "prompt_tokens": p_n,
            "completion_tokens": c_n,
        }
        if result and result.first_token_s is not None:
            fields["first_token_ms"] = round(result.first_token_s * 1000, 1)
        self.audit.record(prompt=prompt, **fields)

    def close(self) -> None:
        self.manager.close()
