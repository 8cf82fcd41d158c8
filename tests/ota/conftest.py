"""A real (small) signed rpi5 bundle, and X.509/PEM keys for the OTA tools."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest


def _model_dir(root: Path) -> Path:
    """A model folder the bundler accepts; the OTA exports never look inside the weights."""
    root.mkdir(parents=True)
    (root / "llmos_model.json").write_text(json.dumps({
        "schema_version": 1, "name": "ota-probe", "task": "text-generation", "format": "onnx",
        "quant": "fp32", "context_length": 64, "eos_token_ids": [0], "chat_template": None,
        "embedding": None}))
    (root / "model.onnx").write_bytes(bytes(range(256)) * 64)
    return root


@pytest.fixture
def small_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """make_bundle for the rpi5 target without wheels: folder + reproducible .tar.gz beside it."""
    from llmos_edge.bundle import generate_keys, make_bundle
    from llmos_edge.bundle.spec import BundleSpec
    from llmos_edge.spec import load_target

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    key, _pub = generate_keys(tmp_path / "sign")
    spec = BundleSpec(target=load_target("rpi5"), recipe="ota-probe", version="1.2.3",
                      models={"ota-probe": _model_dir(tmp_path / "model")}, signing_key=key, wheels=False)
    return make_bundle(spec, tmp_path / "out").folder


@pytest.fixture
def x509_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Self-signed EC P-256 certificate + key (RAUC signs CMS; Mender takes the same PEM key)."""
    return _make_x509(tmp_path / "ota")


@pytest.fixture
def other_x509_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A second, unrelated certificate: a keyring that must not accept x509_pair's signatures."""
    return _make_x509(tmp_path / "other")


def _make_x509(prefix: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmos-ota-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = Path(f"{prefix}.cert.pem"), Path(f"{prefix}.key.pem")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # SEC1 ("BEGIN EC PRIVATE KEY"): mender-artifact refuses PKCS#8 EC keys; rauc takes both.
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    key_path.write_bytes(pem)
    key_path.chmod(0o600)
    return cert_path, key_path
