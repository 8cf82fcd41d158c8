"""Append-only JSON-lines audit log with personal data masked out of prompt text."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARDLIKE = re.compile(r"(?<![\w])(?:\d[ -]?){12,18}\d(?![\w])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_PHONE = re.compile(r"(?<![\w])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?![\w])")
_LONG_ID = re.compile(r"\b[A-Z]{0,3}\d{6,}[A-Z]?\b")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_or_id(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else "[ID]"


def _phone(m: re.Match[str]) -> str:
    return "[PHONE]" if len(re.sub(r"\D", "", m.group())) >= 7 else m.group()


def mask(text: str) -> str:
    """Emails, card numbers (Luhn-checked), IBANs, SSN-style ids, phone numbers, long id numbers."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub("[IBAN]", text)
    text = _SSN.sub("[ID]", text)
    text = _CARDLIKE.sub(_card_or_id, text)
    text = _PHONE.sub(_phone, text)
    return _LONG_ID.sub("[ID]", text)


class AuditLog:
    def __init__(self, path: Path | None, raw: bool = False) -> None:
        self.path, self.raw = path, raw
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, *, prompt: str | None = None, **fields: Any) -> None:
        """One line per request, written with a single O_APPEND write so lines never interleave."""
        if self.path is None:
            return
        entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        if prompt is not None:
            entry["prompt"] = prompt if self.raw else mask(prompt)
            entry["prompt_masked"] = not self.raw
        line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
