"""Model encryption at rest: the format, and the device side that decrypts into RAM (tmpfs) only.

Scheme "llmos-x25519-aes256gcm-v1":
- one random 256-bit data key (DEK) per bundle, wrapped to the device's X25519 public key:
  ephemeral X25519 -> shared secret -> HKDF-SHA256(salt = eph_pub || device_pub) -> KEK,
  AES-256-GCM(KEK, wrap_nonce, DEK, aad = "llmos-edge dek v1");
- each weight file F becomes F.enc: magic, 7-byte nonce prefix, chunk size, then 1 MiB chunks
  sealed with AES-256-GCM(DEK, prefix || u32 counter || last-flag, aad = header || F's name), so
  chunks cannot be reordered, dropped, truncated or swapped between files, and no header byte
  (magic, prefix, chunk size) can change without every chunk failing;
- the model folder holds llmos_encryption.json with the wrapped key and the file map.
Decrypted weights go to a private (0700) folder on tmpfs named after the process, and the runtime
unlinks it as soon as the engine has loaded them (release_model_dir), so a kill -9 after loading
leaves nothing; a kill during loading leaves a folder that the next start sweeps (its pid is gone).
(memfd files would die with the process, but onnxruntime refuses external data behind a link.)
Self-contained on purpose (copied into bundles): stdlib + cryptography, relative imports only.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import RuntimeFailure

SCHEME = "llmos-x25519-aes256gcm-v1"
INFO_FILE = "llmos_encryption.json"
ENC_SUFFIX = ".enc"
MAGIC = b"LLMOSEN2"  # v2: the header is authenticated (AEAD associated data)
MAGIC_V1 = b"LLMOSEN1"  # v1 (before the header was authenticated): refused, rebuild the bundle
CHUNK = 1 << 20
MIN_CHUNK, MAX_CHUNK = 1 << 10, 64 << 20
_TAG = 16
_HKDF_INFO = b"llmos-edge dek wrap v1"
_WRAP_AAD = b"llmos-edge dek v1"
_HEADER = struct.Struct(">8s7sI")
KEY_ENV = "LLMOS_DEVICE_KEY"
DIR_ENV = "LLMOS_DECRYPT_DIR"
_MEMORY_FS = {"tmpfs", "ramfs"}


class DecryptionError(RuntimeFailure):
    """An encrypted model cannot be opened: no key, wrong key, damaged file, or no tmpfs."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def _kek(shared: bytes, eph_pub: bytes, dev_pub: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + dev_pub, info=_HKDF_INFO).derive(shared)


def wrap_key(dek: bytes, device_public: Any) -> dict[str, str]:
    """Wrap a data key to an X25519 public key; returns the JSON-able header fields."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    eph = X25519PrivateKey.generate()
    eph_pub, dev_pub = _raw_public(eph.public_key()), _raw_public(device_public)
    nonce = os.urandom(12)
    wrapped = AESGCM(_kek(eph.exchange(device_public), eph_pub, dev_pub)).encrypt(nonce, dek, _WRAP_AAD)
    return {
        "scheme": SCHEME,
        "device_key_id": hashlib.sha256(dev_pub).hexdigest(),
        "ephemeral_public": _b64(eph_pub),
        "wrap_nonce": _b64(nonce),
        "wrapped_key": _b64(wrapped),
    }


def unwrap_key(info: dict[str, Any], device_private: Any) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    dev_pub = _raw_public(device_private.public_key())
    have = hashlib.sha256(dev_pub).hexdigest()
    if info.get("device_key_id") != have:
        raise DecryptionError(
            f"wrong device key: the model was encrypted for key id {str(info.get('device_key_id'))[:16]}, "
            f"this key is {have[:16]}; use the device key the bundle was built --encrypt-for"
        )
    try:
        eph_pub = base64.b64decode(info["ephemeral_public"])
        shared = device_private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        aes = AESGCM(_kek(shared, eph_pub, dev_pub))
        dek: bytes = aes.decrypt(
            base64.b64decode(info["wrap_nonce"]), base64.b64decode(info["wrapped_key"]), _WRAP_AAD
        )
    except (InvalidTag, KeyError, ValueError) as exc:
        raise DecryptionError(
            f"cannot unwrap the model key: wrong device key or damaged {INFO_FILE}"
        ) from exc
    return dek


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


def encrypt_stream(src: IO[bytes], dst: IO[bytes], dek: bytes, name: str) -> None:
    """Seal src into dst in CHUNK-sized AES-GCM chunks (the last one flagged)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aes, prefix = AESGCM(dek), os.urandom(7)
    header = _HEADER.pack(MAGIC, prefix, CHUNK)
    aad = header + name.encode()
    dst.write(header)
    counter, buf = 0, src.read(CHUNK)
    while True:
        nxt = src.read(CHUNK)
        dst.write(aes.encrypt(_nonce(prefix, counter, not nxt), buf, aad))
        if not nxt:
            return
        counter, buf = counter + 1, nxt


def decrypt_chunks(src: IO[bytes], dek: bytes, name: str) -> Iterator[bytes]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = src.read(_HEADER.size)
    if len(header) == _HEADER.size and header[:8] == MAGIC_V1:
        raise DecryptionError(
            f"{name}{ENC_SUFFIX} uses the old encryption format (v1, header not authenticated), "
            "which this runtime no longer loads; rebuild the bundle with --encrypt-for"
        )
    if len(header) != _HEADER.size or header[:8] != MAGIC:
        raise DecryptionError(f"{name}{ENC_SUFFIX} is not an llmos encrypted file")
    _, prefix, chunk = _HEADER.unpack(header)
    if not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise DecryptionError(f"{name}{ENC_SUFFIX} is damaged: chunk size {chunk} is out of range")
    aes, aad = AESGCM(dek), header + name.encode()
    counter, buf = 0, src.read(chunk + _TAG)
    while True:
        nxt = src.read(chunk + _TAG)
        try:
            yield aes.decrypt(_nonce(prefix, counter, not nxt), buf, aad)
        except InvalidTag as exc:
            raise DecryptionError(f"{name}{ENC_SUFFIX} is damaged, truncated or was swapped") from exc
        if not nxt:
            return
        counter, buf = counter + 1, nxt


def is_memory_backed(path: Path) -> bool:
    """True when path lies on tmpfs/ramfs (per /proc/mounts, longest matching mount point)."""
    target, best, fstype = str(path.resolve()), "", ""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            mnt = parts[1].replace("\\040", " ")
            inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype in _MEMORY_FS


def _load_device_key(device_key: Path | None) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    path = device_key or (Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV) else None)
    if path is None:
        raise DecryptionError(
            f"the model is encrypted and no device key is configured: set {KEY_ENV} "
            "or 'device_key' in config/runtime.json to the device's X25519 .key file"
        )
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise DecryptionError(f"cannot read device key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise DecryptionError(f"device key {path} is not a PEM private key") from exc
    if not isinstance(key, X25519PrivateKey):
        raise DecryptionError(f"device key {path} is not an X25519 key (llmos-edge keys generate --device)")
    return key


_PREFIX = "llmos-model-"


def _plaintext_dir() -> Path:
    base = Path(os.environ.get(DIR_ENV) or "/dev/shm")
    if not base.is_dir() or not is_memory_backed(base):
        raise DecryptionError(
            f"{base} is not a tmpfs: refusing to write decrypted weights to disk; "
            f"mount a tmpfs and point {DIR_ENV} at it"
        )
    sweep_stale(base)
    out = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base))
    atexit.register(release_model_dir, out)
    return out


def sweep_at_start() -> list[Path]:
    """Called when a runtime starts: remove decrypted copies that killed runtimes left behind."""
    base = Path(os.environ.get(DIR_ENV) or "/dev/shm")
    return sweep_stale(base) if base.is_dir() and is_memory_backed(base) else []


def sweep_stale(base: Path) -> list[Path]:
    """Remove folders a killed runtime left (named llmos-model-<pid>-*, that pid gone, ours)."""
    removed = []
    for p in base.glob(f"{_PREFIX}*-*"):
        pid = p.name[len(_PREFIX):].split("-", 1)[0]
        try:
            owner = p.lstat().st_uid
        except OSError:
            continue
        if pid.isdigit() and owner == os.getuid() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_info(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / INFO_FILE
    if not path.is_file():
        return None
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DecryptionError(f"{path} is unreadable: {exc}") from exc
    if info.get("scheme") != SCHEME or not isinstance(info.get("files"), dict):
        raise DecryptionError(f"{path}: unknown encryption scheme {info.get('scheme')!r}")
    return info


def prepare_model_dir(model_dir: Path, device_key: Path | None) -> Path:
    """model_dir itself when not encrypted; else a decrypted copy on tmpfs (removed at exit).

    device_key: the X25519 private key file; None -> $LLMOS_DEVICE_KEY. Raises DecryptionError.
    """
    info = read_info(model_dir)
    if info is None:
        return model_dir
    dek = unwrap_key(info, _load_device_key(device_key))
    out = _plaintext_dir()
    try:
        enc_names = {v for v in info["files"].values()}
        for src in sorted(model_dir.iterdir()):
            if src.is_dir():
                shutil.copytree(src, out / src.name)
            elif src.name != INFO_FILE and src.name not in enc_names:
                shutil.copyfile(src, out / src.name)
        for name, enc in sorted(info["files"].items()):
            _decrypt_file(model_dir / Path(enc).name, out, Path(name).name, dek)
    except BaseException:
        release_model_dir(out)
        raise
    return out


def _decrypt_file(src: Path, out: Path, name: str, dek: bytes) -> None:
    try:
        with open(src, "rb") as f:
            fd = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as dst:
                for chunk in decrypt_chunks(f, dek, name):
                    dst.write(chunk)
    except FileNotFoundError as exc:
        raise DecryptionError(f"encrypted file {src} is missing") from exc


def release_model_dir(path: Path) -> None:
    """Drop a decrypted copy: once the engine has loaded it, and again at unload or exit."""
    if path.name.startswith(_PREFIX) and is_memory_backed(path.parent):
        shutil.rmtree(path, ignore_errors=True)
