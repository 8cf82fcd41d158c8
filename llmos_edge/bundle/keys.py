"""Ed25519 signing keys and X25519 device keys: generation, loading, key ids.

Private keys are written 0600 and never overwritten silently; a key id is the sha256 of the raw
public key so manifests and error messages can name a key without carrying it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckFailed, UserError
from ..fsutil import atomic_write_bytes
from .keyplace import check_folder_place

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey


def generate_keys(out_prefix: Path, *, device: bool = False, force: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (0600) and PREFIX.pub: Ed25519 for signing, X25519 with device=True."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    priv_path = out_prefix.with_name(out_prefix.name + ".key")
    pub_path = out_prefix.with_name(out_prefix.name + ".pub")
    existing = [p for p in (priv_path, pub_path) if p.exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} already exists; refusing to overwrite a key",
                        hints=["choose another --out prefix", "or pass --force to replace it"])
    priv_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_folder_place(priv_path)  # refuse before writing a key that could not be used safely
    key = X25519PrivateKey.generate() if device else Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_private(priv_path, priv_pem)
    atomic_write_bytes(pub_path, pub_pem)
    pub_path.chmod(0o644)  # public by nature: others verify with it
    return priv_path, pub_path


def _write_private(path: Path, data: bytes) -> None:
    """Create the temp file 0600 from the start, so the key is never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}",
                        hints=["create one with: llmos-edge keys generate --out PREFIX"]) from exc


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .keyplace import check_private_key_place

    check_private_key_place(path)
    try:
        key = serialization.load_pem_private_key(_read(path, "signing key"), password=None)
    except ValueError as exc:
        raise UserError(f"{path} is not a PEM private key: {exc}",
                        hints=["pass the .key file written by: llmos-edge keys generate"]) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{path} is not an Ed25519 signing key",
                        hints=["device keys (--device) cannot sign; use a key from `keys generate`"])
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(_read(path, "public key"))
    except ValueError as exc:
        raise UserError(f"{path} is not a PEM public key: {exc}",
                        hints=["pass the .pub file written by: llmos-edge keys generate"]) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"{path} is not an Ed25519 public key",
                        hints=["pass the signing key's .pub, not a device key"])
    return key


def load_device_public_key(path: Path) -> X25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    try:
        key = serialization.load_pem_public_key(_read(path, "device public key"))
    except ValueError as exc:
        raise UserError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, X25519PublicKey):
        raise UserError(f"{path} is not an X25519 device key",
                        hints=["create device keys with: llmos-edge keys generate --device --out PREFIX"])
    return key


def key_id(public_key: Ed25519PublicKey | X25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(data: bytes, key_path: Path) -> tuple[bytes, str]:
    """Return (base64 signature line, signer key id)."""
    key = load_signing_key(key_path)
    sig = base64.b64encode(key.sign(data)) + b"\n"
    return sig, key_id(key.public_key())


def check_signature(data: bytes, sig_text: bytes, pub_path: Path) -> str:
    """Raise CheckFailed unless sig_text is a valid signature of data by pub_path; return key id."""
    from cryptography.exceptions import InvalidSignature

    pub = load_public_key(pub_path)
    try:
        sig = base64.b64decode(sig_text.strip(), validate=True)
        pub.verify(sig, data)
    except (InvalidSignature, ValueError) as exc:
        raise CheckFailed(
            f"manifest signature does not verify with key {pub_path} (id {key_id(pub)[:16]})",
            hints=["the manifest was changed after signing, or it was signed by another key",
                   "check that --key is the .pub of the key the bundle was built with"],
        ) from exc
    return key_id(pub)
