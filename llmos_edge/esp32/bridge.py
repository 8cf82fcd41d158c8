"""Host bridge daemon: owns the serial port, forwards ESP32 prompts to the local runtime's OpenAI API.

One REQUEST frame (UTF-8 prompt, or JSON {"prompt"|"messages", "max_tokens"}) becomes one
/v1/chat/completions call with stream=true; each streamed piece goes back as CHUNK frames, then
END (JSON summary) or ERROR. The loop survives unplugging, a busy port, garbage and oversize frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from . import ports
from ._errors import DeviceError, LlmosError
from .protocol import MAX_PAYLOAD, PROTO_VERSION, Frame, FrameType, Link, LinkClosed

log = logging.getLogger("llmos_edge.esp32.bridge")


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    port: str
    runtime_url: str = "http://127.0.0.1:8088"
    model: str | None = None
    baud: int = 921600
    request_timeout: float = 120.0
    max_tokens: int = 256
    api_key: str | None = None
    ack_timeout: float = 0.2
    reconnect_max: float = 5.0


@dataclasses.dataclass
class BridgeStats:
    connects: int = 0
    requests: int = 0
    failed_requests: int = 0
    open_failures: int = 0
    last_error: str = ""


class RequestFailed(LlmosError):
    """The runtime refused, failed or timed out; sent to the device as an ERROR frame."""


class Bridge:
    def __init__(self, cfg: BridgeConfig) -> None:
        self.cfg = cfg
        self.stats = BridgeStats()
        self.stop_event = threading.Event()
        self.connected = threading.Event()

    def run(self) -> None:
        """Serve until stop(): (re)open the port, serve frames, back off on failures."""
        delay = 0.1
        while not self.stop_event.is_set():
            try:
                with ports.port_lock(self.cfg.port, "llmos bridge"):
                    ser = ports.open_serial(self.cfg.port, self.cfg.baud)
                    delay = 0.1
                    self._serve_port(ser)
            except DeviceError as exc:
                self._note(exc)
            self.stop_event.wait(delay)
            delay = min(delay * 2, self.cfg.reconnect_max)

    def stop(self) -> None:
        self.stop_event.set()

    def _note(self, exc: DeviceError) -> None:
        if str(exc) != self.stats.last_error:  # log each new state once, not every retry
            log.warning("%s", exc.render().replace("\n", " | "))
        self.stats.last_error = str(exc)
        if not isinstance(exc, LinkClosed):
            self.stats.open_failures += 1

    def _serve_port(self, ser: Any) -> None:
        self.stats.connects += 1
        self.stats.last_error = ""
        log.info("bridge connected to %s", self.cfg.port)
        link = Link(ser, ack_timeout=self.cfg.ack_timeout)
        self.connected.set()
        try:
            while not self.stop_event.is_set():
                before = link.decoder.stats.errors
                frame = link.recv(0.2)
                if link.decoder.stats.errors != before:
                    log.warning("dropped damaged input on %s: %s", self.cfg.port, link.decoder.stats)
                if frame is not None:
                    self._handle(link, frame)
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                ser.close()

    def _handle(self, link: Link, frame: Frame) -> None:
        if frame.type == FrameType.PING:
            link.send(FrameType.PONG, frame.payload)
        elif frame.type == FrameType.VERSION:
            info = {"proto": PROTO_VERSION, "bridge": "llmos-edge", "max_payload": MAX_PAYLOAD}
            link.send(FrameType.VERSION, json.dumps(info).encode())
        elif frame.type == FrameType.REQUEST:
            self._request(link, frame.payload)
        else:
            link.send(FrameType.ERROR, f"unexpected frame type {frame.type}".encode())

    def _request(self, link: Link, payload: bytes) -> None:
        self.stats.requests += 1
        chunks = 0
        try:
            body = build_body(payload, self.cfg)
            finish = None
            for piece, fin in stream_chat(self.cfg, body):
                finish = fin or finish
                data = piece.encode()
                for i in range(0, len(data), MAX_PAYLOAD):
                    link.send(FrameType.CHUNK, data[i : i + MAX_PAYLOAD])
                    chunks += 1
            link.send(FrameType.END, json.dumps({"finish_reason": finish, "chunks": chunks}).encode())
        except RequestFailed as exc:
            self.stats.failed_requests += 1
            log.warning("request failed: %s", exc.message)
            link.send(FrameType.ERROR, exc.message.encode()[:MAX_PAYLOAD])


def build_body(payload: bytes, cfg: BridgeConfig) -> dict[str, Any]:
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        raise RequestFailed("prompt is not valid UTF-8") from exc
    req: dict[str, Any] = {}
    if text.lstrip().startswith("{"):
        try:
            req = json.loads(text)
        except ValueError as exc:
            raise RequestFailed(f"request JSON is invalid: {exc}") from exc
    messages = req.get("messages") or [{"role": "user", "content": req.get("prompt", text)}]
    body: dict[str, Any] = {"messages": messages, "stream": True,
                            "max_tokens": int(req.get("max_tokens", cfg.max_tokens))}
    if "temperature" in req:
        body["temperature"] = float(req["temperature"])
    if cfg.model:
        body["model"] = cfg.model
    return body


def stream_chat(cfg: BridgeConfig, body: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """POST a streaming chat completion; yield (text piece, finish_reason) within the deadline."""
    deadline = time.monotonic() + cfg.request_timeout
    url = urllib.parse.urlsplit(cfg.runtime_url)
    host = url.hostname or "127.0.0.1"
    conn = http.client.HTTPConnection(host, url.port or 80, timeout=cfg.request_timeout)
    headers = {"Content-Type": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    try:
        conn.request("POST", url.path.rstrip("/") + "/v1/chat/completions", json.dumps(body), headers)
        resp = conn.getresponse()
        if resp.status != 200:
            detail = resp.read(300).decode(errors="replace")
            raise RequestFailed(f"runtime answered HTTP {resp.status}: {detail}")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestFailed(f"request timed out after {cfg.request_timeout:g} s")
            if conn.sock is not None:
                conn.sock.settimeout(left)  # the whole request shares one deadline
            line = resp.readline()
            if not line:
                break
            piece = _sse_piece(line)
            if piece is None:
                break
            if piece != ("", None):
                yield piece
    except TimeoutError as exc:
        raise RequestFailed(f"request timed out after {cfg.request_timeout:g} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise RequestFailed(f"runtime at {cfg.runtime_url} unreachable or failed: {exc}") from exc
    finally:
        conn.close()


def _sse_piece(line: bytes) -> tuple[str, str | None] | None:
    """One SSE line -> (text, finish_reason); None at [DONE]; ("", None) for anything else."""
    if not line.startswith(b"data:"):
        return ("", None)
    data = line[5:].strip()
    if data == b"[DONE]":
        return None
    try:
        obj = json.loads(data)
        choice = (obj.get("choices") or [{}])[0]
    except (ValueError, AttributeError, IndexError):
        return ("", None)
    return (choice.get("delta", {}).get("content") or "", choice.get("finish_reason"))


def main(argv: list[str] | None = None) -> int:
    """`python -m llmos_edge.esp32.bridge --port /dev/ttyACM0 --runtime http://127.0.0.1:8088`."""
    import argparse
    import os
    import signal

    p = argparse.ArgumentParser(prog="llmos-bridge", description=__doc__)
    p.add_argument("--port", required=True)
    p.add_argument("--runtime", default="http://127.0.0.1:8088")
    p.add_argument("--model")
    p.add_argument("--baud", type=int, default=921600)
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout (s)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--api-key-env", help="environment variable holding the runtime's API key")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = BridgeConfig(a.port, a.runtime, a.model, a.baud, a.timeout, a.max_tokens,
                       os.environ.get(a.api_key_env) if a.api_key_env else None)
    bridge = Bridge(cfg)
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    with contextlib.suppress(KeyboardInterrupt):
        bridge.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
