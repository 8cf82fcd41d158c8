"""A GGUF's tokenizer.ggml.add_bos_token reaches tokenizer_config.json, where the gate and runtime read it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from llmos_edge.stages import model_dir as md
from llmos_edge.stages.export import _gguf_special_tokens
from llmos_edge.stages.probe import gguf_flag


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf(path: Path, kvs: list[tuple[str, int, bytes]], n_kv: int | None = None) -> Path:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs) if n_kv is None else n_kv)
    for key, vtype, value in kvs:
        data += _s(key) + struct.pack("<I", vtype) + value
    path.write_bytes(data)
    return path


ARCH = ("general.architecture", 8, _s("gemma3"))
VOCAB = ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + _s("<bos>") + _s("a") + _s("b"))


def test_gguf_flag_reads_bools_and_nothing_else(tmp_path: Path) -> None:
    g = _gguf(tmp_path / "m.gguf", [ARCH, VOCAB, ("tokenizer.ggml.add_bos_token", 7, b"\x01")])
    assert gguf_flag(g, "tokenizer.ggml.add_bos_token") is True
    assert gguf_flag(g, "tokenizer.ggml.add_eos_token") is None  # absent
    assert gguf_flag(g, "general.architecture") is None  # not a bool
    off = _gguf(tmp_path / "off.gguf", [("tokenizer.ggml.add_bos_token", 7, b"\x00")])
    assert gguf_flag(off, "tokenizer.ggml.add_bos_token") is False


def test_hostile_headers_give_none_not_a_crash(tmp_path: Path) -> None:
    key = "tokenizer.ggml.add_bos_token"
    assert gguf_flag(_gguf(tmp_path / "lie.gguf", [ARCH], n_kv=5), key) is None  # truncated
    assert gguf_flag(_gguf(tmp_path / "many.gguf", [], n_kv=10**12), key) is None
    huge = tmp_path / "huge.gguf"  # a key length of 2^60 bytes
    huge.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 60))
    assert gguf_flag(huge, key) is None
    (tmp_path / "x.gguf").write_bytes(b"NOPE" + bytes(40))
    assert gguf_flag(tmp_path / "x.gguf", key) is None
    assert gguf_flag(tmp_path / "missing.gguf", key) is None


def test_prepared_folder_gets_the_gguf_convention(tiny_decoder_fp32_dir: Path, tmp_path: Path) -> None:
    import shutil

    hf = tmp_path / "hf"
    hf.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_decoder_fp32_dir / name, hf / name)
    assert md.special_framing(hf) == (None, None)
    g = _gguf(tmp_path / "m.gguf", [ARCH, ("tokenizer.ggml.add_bos_token", 7, b"\x01")])
    assert _gguf_special_tokens(g, hf) == {"add_bos_token": True}
    assert json.loads((hf / "tokenizer_config.json").read_text())["add_bos_token"] is True
    bos, eos = md.special_framing(hf)
    assert bos is not None and eos is None
