"""verify_bundle: signature first, then every file; each tampering named precisely."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from llmos_edge.bundle import BundleResult, generate_keys, verify_bundle
from llmos_edge.errors import CheckFailed


@pytest.fixture
def copy(pristine: tuple[BundleResult, Path], tmp_path: Path) -> tuple[Path, Path]:
    res, pub = pristine
    dest = tmp_path / "bundle"
    shutil.copytree(res.folder, dest)
    return dest, pub


def _fails(path: Path, pub: Path | None, *needles: str, **kw: bool) -> CheckFailed:
    with pytest.raises(CheckFailed) as info:
        verify_bundle(path, pub, **kw)
    for needle in needles:
        assert needle in info.value.message, info.value.message
    return info.value


def test_valid_folder_and_image_verify(pristine: tuple[BundleResult, Path]) -> None:
    res, pub = pristine
    for path in (res.folder, res.image):
        m = verify_bundle(path, pub)
        assert m.signed_by and not m.unsigned_allowed
        assert m.name == "tiny-recipe-rpi4" and m.version == "1.0.0"
        assert set(m.files) == set(res.manifest["files"])


def test_flipped_byte_in_any_file_is_named(copy: tuple[Path, Path], bundle_file: str) -> None:
    folder, pub = copy
    target = folder / bundle_file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    _fails(folder, pub, f"{bundle_file}: sha256 differs")


def test_added_file_is_named(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    (folder / "models" / "tiny" / "backdoor.py").write_text("import os\n")
    _fails(folder, pub, "models/tiny/backdoor.py: added")


def test_removed_file_is_named(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    (folder / "smoke" / "golden.json").unlink()
    _fails(folder, pub, "smoke/golden.json: missing")


def test_truncated_file_reports_size(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    f = folder / "models" / "tiny" / "model.onnx.data"
    f.write_bytes(f.read_bytes()[:-1])
    _fails(folder, pub, "models/tiny/model.onnx.data: size")


def test_symlink_in_folder_is_refused(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    (folder / "config" / "evil").symlink_to("/etc/passwd")
    _fails(folder, pub, "config/evil: is a symlink")


def test_changed_manifest_breaks_signature(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    man = folder / "manifest.json"
    raw = json.loads(man.read_text())
    raw["bundle_version"] = "9.9.9"
    man.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    _fails(folder, pub, "signature does not verify")


def test_manifest_changed_together_with_file_is_caught_by_signature(copy: tuple[Path, Path]) -> None:
    """An attacker who updates the hash in the manifest still cannot re-sign it."""
    from llmos_edge.fsutil import sha256_file

    folder, pub = copy
    (folder / "config" / "runtime.json").write_text('{"host": "0.0.0.0"}')
    man = folder / "manifest.json"
    raw = json.loads(man.read_text())
    raw["files"]["config/runtime.json"] = {"sha256": sha256_file(folder / "config" / "runtime.json"),
                                           "size": (folder / "config" / "runtime.json").stat().st_size}
    man.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    _fails(folder, pub, "signature does not verify")


def test_wrong_key_is_refused(copy: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = copy
    _, other_pub = generate_keys(tmp_path / "other")
    err = _fails(folder, other_pub, "signature does not verify")
    assert any("signed by key id" in h for h in err.hints)


def test_wrong_key_is_refused_even_with_allow_unsigned(copy: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = copy
    _, other_pub = generate_keys(tmp_path / "other")
    _fails(folder, other_pub, "signature does not verify", allow_unsigned=True)


def test_missing_signature_is_refused(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    (folder / "manifest.sig").unlink()
    _fails(folder, pub, "not signed")


def test_garbage_signature_is_refused(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    (folder / "manifest.sig").write_text("not base64 at all!!\n")
    _fails(folder, pub, "signature does not verify")


def test_no_key_configured_means_refuse(copy: tuple[Path, Path]) -> None:
    folder, _ = copy
    _fails(folder, None, "no public key given")


def test_allow_unsigned_accepts_and_records(copy: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = copy
    (folder / "manifest.sig").unlink()
    m = verify_bundle(folder, None, allow_unsigned=True)
    assert m.unsigned_allowed and m.signed_by is None and "UNSIGNED" in m.trust
    lines = (tmp_path / "cache" / "audit.jsonl").read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["event"] == "accepted-unsigned" and entry["version"] == "1.0.0"


def test_allow_unsigned_still_checks_files(copy: tuple[Path, Path]) -> None:
    folder, _ = copy
    (folder / "manifest.sig").unlink()
    (folder / "bin" / "llmos-launch").write_text("#!/bin/sh\nrm -rf /\n")
    _fails(folder, None, "bin/llmos-launch: s", allow_unsigned=True)


def test_unsigned_build_is_recorded_in_manifest(build: Callable[..., BundleResult]) -> None:
    res = build(signing_key=None)
    assert res.manifest["signing"] is None
    assert not (res.folder / "manifest.sig").exists()
    _fails(res.folder, None, "not signed")


def test_flipped_byte_in_image_is_refused(pristine: tuple[BundleResult, Path], tmp_path: Path) -> None:
    res, pub = pristine
    data = bytearray(res.image.read_bytes())
    data[len(data) // 2] ^= 0x40
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckFailed):
        verify_bundle(bad, pub)


def test_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _fails(tmp_path / "empty", None, "no manifest.json")


def test_manifest_not_json(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    (folder / "manifest.json").write_text("{oops")
    _fails(folder, pub, "not valid JSON")


def test_signed_manifest_with_escaping_path_is_refused(copy: tuple[Path, Path],
                                                      signing_keys: tuple[Path, Path]) -> None:
    """Even a correctly signed manifest may not point verification outside the bundle."""
    from llmos_edge.bundle import manifest as mf
    from llmos_edge.bundle.keys import sign

    folder, _ = copy
    priv, pub = signing_keys
    raw = json.loads((folder / "manifest.json").read_text())
    raw["files"]["../outside.txt"] = {"sha256": "0" * 64, "size": 1}
    data = mf.dump(raw)
    (folder / "manifest.json").write_bytes(data)
    (folder / "manifest.sig").write_bytes(sign(data, priv)[0])
    _fails(folder, pub, "'../outside.txt': manifest lists a path outside the bundle")


def test_manifest_without_files_table(copy: tuple[Path, Path]) -> None:
    folder, pub = copy
    (folder / "manifest.json").write_text('{"schema_version": 1}')
    _fails(folder, pub, "'files' must map paths")


@pytest.mark.parametrize("text, needle", [
    ("[" * 100_000 + "]" * 100_000, "nests brackets 100000 deep"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nests brackets 100000 deep"),
    ("[" * 100_000, "nests brackets 100000 deep"),
    ('{"schema_version": 1, "pad": "' + "x" * (17 << 20) + '"}', "the limit is"),
    ("\udcff", "not valid JSON"),
])
def test_hostile_manifest_is_a_clear_check_failure(copy: tuple[Path, Path], text: str, needle: str) -> None:
    """100k nested brackets were a RecursionError (exit 1); now exit 4 with the reason."""
    import subprocess
    import sys

    folder, pub = copy
    (folder / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    _fails(folder, pub, needle)
    p = subprocess.run([sys.executable, "-m", "llmos_edge", "verify", str(folder), "--key", str(pub)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 4 and needle in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("entry", [{"sha256": "0" * 64, "size": -1}, {"sha256": "0" * 64, "size": True},
                                   {"sha256": "0" * 64, "size": 1 << 40}, {"sha256": "zz", "size": 1},
                                   {"sha256": "0" * 64, "size": 1.5}])
def test_manifest_entry_shape_checked(copy: tuple[Path, Path], entry: dict[str, object]) -> None:
    folder, pub = copy
    raw = json.loads((folder / "manifest.json").read_text())
    raw["files"]["config/runtime.json"] = entry
    (folder / "manifest.json").write_text(json.dumps(raw))
    _fails(folder, pub, "'files' must map paths")


def test_manifest_without_name_refused_not_a_crash(copy: tuple[Path, Path]) -> None:
    """An unsigned manifest with no name once crashed the --allow-unsigned record (KeyError)."""
    folder, _ = copy
    raw = json.loads((folder / "manifest.json").read_text())
    del raw["name"]
    (folder / "manifest.json").write_text(json.dumps(raw))
    (folder / "manifest.sig").unlink()
    _fails(folder, None, "'name' and 'bundle_version' must be non-empty strings", allow_unsigned=True)
