"""Audit log: one JSON line per request, personal data masked unless audit_raw is on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmos_edge.runtime.audit import luhn_ok, mask

from .rt_helpers import MakeConfig, StartServer, chat, http

CASES = [
    ("write to jane.doe+x@example.co.uk today", "write to [EMAIL] today"),
    ("card 4111 1111 1111 1111 expires", "card [CARD] expires"),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("not luhn 4111 1111 1111 1112", "not luhn [ID]"),
    ("call +44 20 7946 0958 now", "call [PHONE] now"),
    ("call (555) 123-4567", "call [PHONE]"),
    ("ssn 123-45-6789", "ssn [ID]"),
    ("iban DE89 3704 0044 0532 0130 00", "iban [IBAN]"),
    ("passport X12345678 ok", "passport [ID] ok"),
    ("3 cats, 42 dogs, year 2024, version 1.2.3", "3 cats, 42 dogs, year 2024, version 1.2.3"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_mask(text: str, expected: str) -> None:
    assert mask(text) == expected


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")


def _lines(path: Path, n: int) -> list[dict]:
    """The server writes the audit line just after the response goes out: wait for it briefly."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n:
            return [json.loads(x) for x in lines]
        time.sleep(0.02)
    raise AssertionError(f"expected {n} audit lines in {path}")


SECRET = "I am bob@corp.example, card 4111 1111 1111 1111, phone +1 415 555 0100"


def test_audit_masks_prompt_and_records_fields(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path, tmp_path: Path
) -> None:
    srv = start_server(make_config([{"id": "dec", "path": decoder_dir}]))
    http("POST", srv.url + "/v1/chat/completions", chat("dec", SECRET, max_tokens=3))
    http("POST", srv.url + "/v1/chat/completions", chat("missing"))
    lines = _lines(tmp_path / "audit.jsonl", 2)
    ok, bad = lines
    assert (
        "bob@corp" not in json.dumps(lines)
        and "4111" not in json.dumps(lines)
        and "555" not in json.dumps(lines)
    )
    assert ok["prompt"] == "user: I am [EMAIL], card [CARD], phone [PHONE]" and ok["prompt_masked"] is True
    assert ok["status"] == 200 and ok["model"] == "dec" and ok["client"] == "127.0.0.1"
    assert ok["prompt_tokens"] > 0 and 0 < ok["completion_tokens"] <= 3 and ok["latency_ms"] > 0
    assert ok["time"].endswith("Z")
    assert bad["status"] == 404 and bad["model"] == "missing"


def test_audit_raw_keeps_prompt_when_explicitly_on(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path, tmp_path: Path
) -> None:
    srv = start_server(make_config([{"id": "dec", "path": decoder_dir}], audit_raw=True))
    http("POST", srv.url + "/v1/chat/completions", chat("dec", SECRET, max_tokens=2))
    (line,) = _lines(tmp_path / "audit.jsonl", 1)
    assert line["prompt"] == f"user: {SECRET}" and line["prompt_masked"] is False


def test_audit_is_append_only_across_restarts(
    make_config: MakeConfig, start_server: StartServer, decoder_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config([{"id": "dec", "path": decoder_dir}])
    for _ in range(2):
        srv = start_server(cfg)
        http("POST", srv.url + "/v1/chat/completions", chat("dec", max_tokens=1))
        srv.stop()
    assert len(_lines(tmp_path / "audit.jsonl", 2)) == 2
