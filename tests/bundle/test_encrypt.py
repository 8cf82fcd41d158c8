"""Encryption at rest: sealed to a device key, decrypted only into tmpfs, clear errors otherwise."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from llmos_edge.bundle import BundleResult, generate_keys, verify_bundle
from llmos_edge.errors import UserError
from llmos_edge.runtime import crypto
from llmos_edge.runtime.crypto import DecryptionError, prepare_model_dir, release_model_dir

WEIGHTS = ("model.onnx", "model.onnx.data")


@pytest.fixture
def sealed(build: Callable[..., BundleResult], device_keys: tuple[Path, Path]) -> BundleResult:
    return build(encrypt_for=device_keys[1])


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_weights_are_not_in_the_bundle_in_plaintext(sealed: BundleResult, model_dir: Path) -> None:
    mdir = sealed.folder / "models" / "tiny"
    assert sorted(p.name for p in mdir.iterdir()) == [
        "llmos_encryption.json", "llmos_model.json", "model.onnx.data.enc", "model.onnx.enc",
        "tokenizer.json"]
    secret = (model_dir / "model.onnx.data").read_bytes()[5000:5064]
    for p in [*_all_files(sealed.folder), sealed.image]:
        assert secret not in p.read_bytes(), p
    enc = sealed.manifest["encrypted"]
    assert enc["scheme"] == crypto.SCHEME
    assert enc["files"] == ["models/tiny/model.onnx.data.enc", "models/tiny/model.onnx.enc"]


def test_encrypted_bundle_verifies(sealed: BundleResult, signing_keys: tuple[Path, Path]) -> None:
    m = verify_bundle(sealed.image, signing_keys[1])
    assert m.encrypted and m.encrypted["device_key_id"] == sealed.manifest["encrypted"]["device_key_id"]


def test_round_trip_into_tmpfs_only(sealed: BundleResult, model_dir: Path, device_keys: tuple[Path, Path],
                                    tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in _all_files(tmp_path)}
    out = prepare_model_dir(sealed.folder / "models" / "tiny", device_keys[0])
    try:
        assert crypto.is_memory_backed(out) and out.stat().st_mode & 0o777 == 0o700
        for name in (*WEIGHTS, "tokenizer.json", "llmos_model.json"):
            assert (out / name).read_bytes() == (model_dir / name).read_bytes(), name
        assert not (out / crypto.INFO_FILE).exists()
        # nothing new or changed on persistent storage under the test's folders
        after = {p: p.stat().st_mtime_ns for p in _all_files(tmp_path)}
        assert after == before
    finally:
        release_model_dir(out)
    assert not out.exists()


def test_key_from_environment(sealed: BundleResult, device_keys: tuple[Path, Path], model_dir: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crypto.KEY_ENV, str(device_keys[0]))
    out = prepare_model_dir(sealed.folder / "models" / "tiny", None)
    try:
        assert (out / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()
    finally:
        release_model_dir(out)


def test_no_key_fails_clearly(sealed: BundleResult) -> None:
    with pytest.raises(DecryptionError, match=r"no device key is configured.*LLMOS_DEVICE_KEY"):
        prepare_model_dir(sealed.folder / "models" / "tiny", None)


def test_wrong_key_fails_clearly(sealed: BundleResult, tmp_path: Path) -> None:
    other, _ = generate_keys(tmp_path / "other-device", device=True)
    with pytest.raises(DecryptionError, match="wrong device key"):
        prepare_model_dir(sealed.folder / "models" / "tiny", other)


def test_signing_key_is_not_a_device_key(sealed: BundleResult, signing_keys: tuple[Path, Path]) -> None:
    with pytest.raises(DecryptionError, match="not an X25519 key"):
        prepare_model_dir(sealed.folder / "models" / "tiny", signing_keys[0])


def test_encrypt_for_needs_a_device_key(build: Callable[..., BundleResult],
                                        signing_keys: tuple[Path, Path]) -> None:
    with pytest.raises(UserError, match="not an X25519 device key"):
        build(encrypt_for=signing_keys[1])


def test_refuses_persistent_plaintext_dir(sealed: BundleResult, device_keys: tuple[Path, Path],
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if crypto.is_memory_backed(disk):
        pytest.skip("tmp_path is itself on tmpfs here, so there is no persistent folder to refuse")
    monkeypatch.setenv(crypto.DIR_ENV, str(disk))
    with pytest.raises(DecryptionError, match="not a tmpfs"):
        prepare_model_dir(sealed.folder / "models" / "tiny", device_keys[0])
    assert list(disk.iterdir()) == []


def _tamper(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    chunk = crypto.CHUNK + 16
    if how == "flip":
        data[-100] ^= 1
    elif how == "drop-last-chunk":  # the file then ends on a chunk not flagged as last
        del data[crypto._HEADER.size + chunk:]
    elif how == "swap-chunks":
        h = crypto._HEADER.size
        first, rest = data[h:h + chunk], data[h + chunk:]
        data = data[:h] + rest + first
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "drop-last-chunk", "swap-chunks"])
def test_tampered_ciphertext_is_detected(sealed: BundleResult, device_keys: tuple[Path, Path],
                                         how: str) -> None:
    enc = sealed.folder / "models" / "tiny" / "model.onnx.data.enc"
    _tamper(enc, how)
    before = set(Path("/dev/shm").glob("llmos-model-*"))
    with pytest.raises(DecryptionError, match="damaged, truncated or was swapped"):
        prepare_model_dir(sealed.folder / "models" / "tiny", device_keys[0])
    assert set(Path("/dev/shm").glob("llmos-model-*")) <= before, "a failed decrypt must leave nothing"


def test_files_cannot_be_swapped(sealed: BundleResult, device_keys: tuple[Path, Path]) -> None:
    mdir = sealed.folder / "models" / "tiny"
    a, b = mdir / "model.onnx.enc", mdir / "model.onnx.data.enc"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(DecryptionError):
        prepare_model_dir(mdir, device_keys[0])


def test_plain_model_dir_is_returned_unchanged(model_dir: Path) -> None:
    assert prepare_model_dir(model_dir, None) == model_dir


def test_header_format(sealed: BundleResult) -> None:
    raw = (sealed.folder / "models" / "tiny" / "model.onnx.enc").read_bytes()
    magic, _prefix, chunk = crypto._HEADER.unpack(raw[: crypto._HEADER.size])
    assert magic == crypto.MAGIC and chunk == crypto.CHUNK
    assert len(raw) == crypto._HEADER.size + 4096 + 16
    info = json.loads((sealed.folder / "models" / "tiny" / crypto.INFO_FILE).read_text())
    assert info["files"] == {"model.onnx": "model.onnx.enc", "model.onnx.data": "model.onnx.data.enc"}
    assert struct.calcsize(">8s7sI") == crypto._HEADER.size


def test_encrypted_bundles_use_fresh_keys(build: Callable[..., BundleResult],
                                          device_keys: tuple[Path, Path]) -> None:
    a, b = build("a", encrypt_for=device_keys[1]), build("b", encrypt_for=device_keys[1])
    key = "models/tiny/model.onnx.enc"
    assert a.manifest["files"][key] != b.manifest["files"][key]
    assert os.path.getsize(a.image) > 0


@pytest.mark.parametrize("offset", range(struct.calcsize(">8s7sI")))
def test_every_header_byte_is_authenticated(sealed: BundleResult, device_keys: tuple[Path, Path],
                                            offset: int) -> None:
    """Magic, nonce prefix and chunk size: flipping any bit of the header is refused."""
    enc = sealed.folder / "models" / "tiny" / "model.onnx.data.enc"
    data = bytearray(enc.read_bytes())
    data[offset] ^= 0x01
    enc.write_bytes(bytes(data))
    with pytest.raises(DecryptionError, match=r"not an llmos encrypted file|damaged"):
        prepare_model_dir(sealed.folder / "models" / "tiny", device_keys[0])


@pytest.mark.parametrize("chunk", [crypto.CHUNK // 2, crypto.CHUNK * 2, 0, 2**32 - 1])
def test_chunk_size_rewritten_is_refused(sealed: BundleResult, device_keys: tuple[Path, Path],
                                         chunk: int) -> None:
    """model.onnx is one chunk: with an unauthenticated header (v1) any larger size still decrypted."""
    enc = sealed.folder / "models" / "tiny" / "model.onnx.enc"
    raw = enc.read_bytes()
    magic, prefix, _ = crypto._HEADER.unpack(raw[: crypto._HEADER.size])
    enc.write_bytes(crypto._HEADER.pack(magic, prefix, chunk) + raw[crypto._HEADER.size:])
    with pytest.raises(DecryptionError, match="damaged"):
        prepare_model_dir(sealed.folder / "models" / "tiny", device_keys[0])


def test_old_v1_files_are_refused_with_a_rebuild_hint(sealed: BundleResult,
                                                     device_keys: tuple[Path, Path]) -> None:
    """Bundles built before the header was authenticated: not loaded (no downgrade to v1)."""
    enc = sealed.folder / "models" / "tiny" / "model.onnx.enc"
    enc.write_bytes(crypto.MAGIC_V1 + enc.read_bytes()[8:])
    with pytest.raises(DecryptionError, match=r"old encryption format.*rebuild the bundle"):
        prepare_model_dir(sealed.folder / "models" / "tiny", device_keys[0])
