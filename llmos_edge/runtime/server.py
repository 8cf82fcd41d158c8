"""OpenAI-compatible HTTP API on the stdlib ThreadingHTTPServer (nothing extra on the device)."""

from __future__ import annotations

import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .api import chunk_body, completion_body, parse_text_request, require_model, usage
from .config import LOOPBACK, RuntimeConfig
from .errors import ApiError, ConfigError
from .service import Runtime
from .textgen import GenResult

_OPEN_PATHS = ("/health",)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], runtime: Runtime, api_key: str | None) -> None:
        self.runtime, self.api_key = runtime, api_key
        super().__init__(addr, Handler)


class Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "llmos-runtime"
    protocol_version = "HTTP/1.0"
    timeout = 300  # a stalled client cannot hold a handler thread forever

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the audit log and /metrics are the record; keep stderr quiet

    # --- plumbing -------------------------------------------------------------------------------
    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: ApiError) -> None:
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after else {}
        self._send_json(err.status, err.body(), headers)

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if length > self.server.runtime.config.max_body_bytes:
            raise ApiError(
                413,
                f"request body over {self.server.runtime.config.max_body_bytes} bytes",
                code="body_too_large",
            )
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"malformed JSON body: {exc}", code="invalid_json") from None

    def _authorized(self) -> bool:
        key = self.server.api_key
        if key is None or self.path.split("?")[0] in _OPEN_PATHS:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())

    def _dispatch(self, routes: dict[str, Any]) -> None:
        path = self.path.split("?")[0].rstrip("/") or "/"
        start = time.perf_counter()
        self._status: int = 200
        self._model: str | None = None
        self._result: GenResult | None = None
        self._prompt: str | None = None
        self._ptokens = 0
        try:
            if not self._authorized():
                raise ApiError(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    type="authentication_error",
                    code="invalid_api_key",
                )
            if path not in routes:
                raise ApiError(404, f"no route {self.command} {path}", code="not_found")
            routes[path]()
        except ApiError as err:
            self._status = err.status
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self._status = 499
        except Exception as exc:
            self._status = 500
            self._send_error(
                ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")
            )
        finally:
            if path not in ("/health", "/metrics"):
                self.server.runtime.record(
                    endpoint=path,
                    model=self._model,
                    status=self._status,
                    latency_s=time.perf_counter() - start,
                    client=self.client_address[0],
                    prompt=self._prompt,
                    result=self._result,
                    prompt_tokens=self._ptokens,
                )

    def do_GET(self) -> None:
        self._dispatch({"/health": self._health, "/metrics": self._metrics, "/v1/models": self._models})

    def do_POST(self) -> None:
        self._dispatch(
            {
                "/v1/chat/completions": lambda: self._text("chat"),
                "/v1/completions": lambda: self._text("completion"),
                "/v1/embeddings": self._embeddings,
            }
        )

    # --- endpoints ------------------------------------------------------------------------------
    def _health(self) -> None:
        rt = self.server.runtime
        self._send_json(200, {"status": "ok", "models": rt.model_ids(), "loaded": list(rt.manager.loaded)})

    def _metrics(self) -> None:
        data = self.server.runtime.metrics.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _models(self) -> None:
        self._send_json(200, self.server.runtime.list_models())

    def _embeddings(self) -> None:
        rt = self.server.runtime
        body = self._body()
        self._model = model = require_model(body, rt.model_ids())
        vectors, n_tokens = rt.embed(model, body)
        self._ptokens = n_tokens
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": self._model,
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            },
        )

    def _text(self, kind: str) -> None:
        rt = self.server.runtime
        body = self._body()
        self._model = model = require_model(body, rt.model_ids())
        req = parse_text_request(kind, body, model, rt.default_max_tokens(model))
        self._prompt = req.prompt_text()
        with rt.text_session(req) as (pieces, result):
            self._result = result
            if req.stream:
                self._stream(req, pieces, result)
            else:
                text = "".join(pieces)
                self._send_json(
                    200,
                    completion_body(
                        req, text, result.finish_reason, result.prompt_tokens, result.completion_tokens
                    ),
                )

    def _stream(self, req: Any, pieces: Any, result: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        first = True
        try:
            for piece in pieces:
                self._sse(chunk_body(req, piece, None, first))
                first = False
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # headers are gone: report in-band, then end the stream cleanly
            self._status = 500
            self._sse(
                ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error").body()
            )
            self.wfile.write(b"data: [DONE]\n\n")
            return
        self._sse(chunk_body(req, None, result.finish_reason, first))
        if req.include_usage:
            self._sse(
                {
                    "id": req.id,
                    "object": "chat.completion.chunk",
                    "created": req.created,
                    "model": req.model,
                    "choices": [],
                    "usage": usage(result.prompt_tokens, result.completion_tokens),
                }
            )
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _sse(self, obj: Any) -> None:
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()


class RunningServer:
    """A server on a background thread; `url` is where it listens."""

    def __init__(self, config: RuntimeConfig, runtime: Runtime | None = None) -> None:
        if config.host not in LOOPBACK and not config.api_key():
            raise ConfigError(
                f"refusing to listen on {config.host} without an API key: set api_key_env in the config and "
                "export that variable, or bind to 127.0.0.1"
            )
        self.runtime = runtime or Runtime(config)
        try:
            self.httpd = _Server((config.host, config.port), self.runtime, config.api_key())
        except OSError as exc:
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
        host, port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="llmos-http", daemon=True)

    def start(self) -> RunningServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.runtime.close()

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(config: RuntimeConfig) -> None:
    """Foreground server until SIGINT/SIGTERM (what the device's systemd unit runs)."""
    import signal

    server = RunningServer(config)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown).start())
    print(f"llmos runtime listening on {server.url} models={server.runtime.model_ids()}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.runtime.close()
