"""`llmos-edge keys generate`, `verify`, `inspect` through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmos_edge.bundle import BundleResult
from llmos_edge.cli.main import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_keys_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["keys", "generate", "--out", str(tmp_path / "k" / "release")], capsys)
    assert code == 0 and "signing (Ed25519)" in out
    key, pub = tmp_path / "k" / "release.key", tmp_path / "k" / "release.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    code, _, err = _run(["keys", "generate", "--out", str(tmp_path / "k" / "release")], capsys)
    assert code == 2 and "refusing to overwrite" in err and "--force" in err
    code, out, _ = _run(["keys", "generate", "--device", "--out", str(tmp_path / "dev")], capsys)
    assert code == 0 and "X25519" in out


def test_verify_ok_and_tampered(pristine: tuple[BundleResult, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    res, pub = pristine
    code, out, _ = _run(["verify", str(res.image), "--key", str(pub)], capsys)
    assert code == 0 and out.startswith("OK tiny-recipe-rpi4 1.0.0") and "signed by key" in out
    folder = tmp_path / "b"
    shutil.copytree(res.folder, folder)
    (folder / "config" / "runtime.json").write_text("{}")
    code, _, err = _run(["verify", str(folder), "--key", str(pub)], capsys)
    assert code == 4 and "config/runtime.json: s" in err and "Traceback" not in err


def test_verify_without_key_refuses_then_allow_unsigned(pristine: tuple[BundleResult, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    res, _ = pristine
    code, _, err = _run(["verify", str(res.folder)], capsys)
    assert code == 4 and "no public key given" in err
    code, out, err = _run(["verify", str(res.folder), "--allow-unsigned"], capsys)
    assert code == 0 and "WARNING" in err and "UNSIGNED" in out


def test_inspect(pristine: tuple[BundleResult, Path], capsys: pytest.CaptureFixture[str]) -> None:
    res, _ = pristine
    code, out, _ = _run(["inspect", str(res.image)], capsys)
    assert code == 0
    assert "tiny-recipe-rpi4 1.0.0" in out and "rpi4 [aarch64, glibc, python 3.11]" in out
    assert "signed   ed25519 key" in out and "not verified" in out
    code, out, _ = _run(["inspect", "--json", str(res.folder)], capsys)
    assert code == 0 and json.loads(out) == res.manifest


def test_entry_point_exit_code(pristine: tuple[BundleResult, Path], tmp_path: Path) -> None:
    """The installed entry point maps CheckFailed to exit 4 with a message, no traceback."""
    res, _ = pristine
    other = tmp_path / "other"
    subprocess.run([sys.executable, "-m", "llmos_edge", "keys", "generate", "--out", str(other)], check=True,
                   capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "llmos_edge", "verify", str(res.folder), "--key",
                           str(other) + ".pub"], capture_output=True, text=True, check=False)
    assert proc.returncode == 4, proc.stderr
    assert "signature does not verify" in proc.stderr and "Traceback" not in proc.stderr


def test_keys_generate_force_replaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = str(tmp_path / "k")
    assert _run(["keys", "generate", "--out", prefix], capsys)[0] == 0
    old = (tmp_path / "k.pub").read_bytes()
    assert _run(["keys", "generate", "--out", prefix, "--force"], capsys)[0] == 0
    assert (tmp_path / "k.pub").read_bytes() != old
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600


def test_verify_uses_the_default_key_as_typed(build: Callable[..., BundleResult], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`llmos-edge verify B` with no flags checks against the user's default key (as serve does)."""
    from llmos_edge.bundle.keyplace import default_signing_key

    key = default_signing_key()  # XDG_CONFIG_HOME is per test (conftest)
    assert key.is_relative_to(tmp_path)
    res = build("own", signing_key=key)
    code, out, _ = _run(["verify", str(res.image)], capsys)
    assert code == 0 and "signed by key" in out
