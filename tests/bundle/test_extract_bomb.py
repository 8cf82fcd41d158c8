"""A 2 MB gzip bomb (2 GiB of zeros) once wrote 2.1 GB before it was refused, and left its folder
behind. Now the manifest is read and checked first and only listed files of listed sizes are written:
the bomb is refused with (almost) nothing written, and nothing is left in the cache.

The bomb is built as many gzip members of one compressed MiB each (gzip readers concatenate them),
so making it costs milliseconds instead of compressing 2 GiB.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from llmos_edge.bundle import extract as ex
from llmos_edge.bundle import manifest as mf
from llmos_edge.bundle import open_bundle, verify_bundle
from llmos_edge.bundle.keys import generate_keys, sign
from llmos_edge.errors import CheckFailed

BOMB = 2 << 30
_MIB_OF_ZEROS = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)


def _manifest(files: dict[str, tuple[str, int]]) -> bytes:
    listed = {k: {"sha256": h, "size": n} for k, (h, n) in files.items()}
    return mf.dump({"schema_version": 1, "name": "bomb", "bundle_version": "1.0.0", "files": listed})


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _bomb(path: Path, manifest: bytes, *, bomb_first: bool = False, sig: bytes | None = None) -> Path:
    """manifest.json (+ .sig), then models/m/bomb.bin: 2 GiB of zeros; ~2 MB on disk."""
    pad = (-len(manifest)) % 512
    head = _header("manifest.json", len(manifest)) + manifest + bytes(pad)
    if sig is not None:
        head += _header("manifest.sig", len(sig)) + sig + bytes((-len(sig)) % 512)
    with open(path, "wb") as f:
        if not bomb_first:
            f.write(gzip.compress(head, mtime=0))
        f.write(gzip.compress(_header("models/m/bomb.bin", BOMB), mtime=0))
        for _ in range(BOMB >> 20):
            f.write(_MIB_OF_ZEROS)
        if bomb_first:
            f.write(gzip.compress(head, mtime=0))
        f.write(gzip.compress(bytes(1024), mtime=0))  # end-of-archive blocks
    assert path.stat().st_size < 4 << 20
    return path


def _no_leftovers(cache: Path) -> None:
    bundles = cache / "bundles"
    assert not bundles.exists() or list(bundles.iterdir()) == [], list(bundles.iterdir())


ZERO_SHA = hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("listed, needle", [
    ({"models/m/other.bin": (ZERO_SHA, 0)}, "is not listed in the manifest"),
    ({"models/m/bomb.bin": (ZERO_SHA, 10)}, "is 2147483648 bytes; the manifest says 10"),
])
def test_gzip_bomb_refused_before_writing(listed: dict[str, tuple[str, int]], needle: str,
                                          tmp_path: Path) -> None:
    img = _bomb(tmp_path / "bomb.tar.gz", _manifest(listed))
    with pytest.raises(CheckFailed, match=needle):
        verify_bundle(img, None, allow_unsigned=True)
    _no_leftovers(tmp_path / "cache")


def test_bomb_as_typed_writes_no_big_file(tmp_path: Path) -> None:
    """`llmos-edge verify bomb.tar.gz --allow-unsigned` under a 16 MiB file-size limit: a write past
    it would kill the process with SIGXFSZ; instead it exits 4 with the reason."""
    img = _bomb(tmp_path / "bomb.tar.gz", _manifest({"models/m/x": (ZERO_SHA, 0)}))
    cap = 16 << 20

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    env = {**os.environ, "LLMOS_EDGE_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "llmos_edge", "verify", str(img), "--allow-unsigned"],
                       capture_output=True, text=True, timeout=120, env=env, preexec_fn=limit)
    assert p.returncode == 4, (p.returncode, p.stderr)
    assert "bomb.bin" in p.stderr and "not listed in the manifest" in p.stderr
    _no_leftovers(tmp_path / "cache")


def test_bomb_before_the_manifest_is_only_read_within_budget(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ex, "PRE_MANIFEST_BYTES", 8 << 20)
    img = _bomb(tmp_path / "bomb.tar.gz", _manifest({}), bomb_first=True)
    with pytest.raises(CheckFailed, match=r"has no manifest\.json near its start"):
        verify_bundle(img, None, allow_unsigned=True)
    _no_leftovers(tmp_path / "cache")


def test_signature_checked_before_a_byte_is_extracted(tmp_path: Path) -> None:
    """A listed, right-sized bomb in an unsigned / wrongly signed image: refused on the manifest."""
    listed = _manifest({"models/m/bomb.bin": ("0" * 64, BOMB)})
    _, pub = generate_keys(tmp_path / "k" / "trusted")
    other, _ = generate_keys(tmp_path / "k" / "other")
    for sig, needle in ((None, "is not signed"), (sign(listed, other)[0], "does not verify")):
        img = _bomb(tmp_path / "bomb.tar.gz", listed, sig=sig)
        with pytest.raises(CheckFailed, match=needle):
            verify_bundle(img, pub)
        _no_leftovers(tmp_path / "cache")


def test_total_over_the_bound_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ex, "MAX_TOTAL_BYTES", 1 << 30)
    img = _bomb(tmp_path / "bomb.tar.gz", _manifest({"models/m/bomb.bin": (ZERO_SHA, BOMB)}))
    with pytest.raises(CheckFailed, match="expands to more than 1 GiB"):
        verify_bundle(img, None, allow_unsigned=True)
    _no_leftovers(tmp_path / "cache")


def test_hash_checked_while_streaming_and_temp_removed(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    img = tmp_path / "x.tar.gz"
    man = _manifest({"a.bin": (hashlib.sha256(b"something else").hexdigest(), len(data))})
    with tarfile.open(img, "w:gz") as tar:
        for name, blob in (("manifest.json", man), ("a.bin", data)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(CheckFailed, match="does not match its sha256"):
        open_bundle(img)
    _no_leftovers(tmp_path / "cache")


def test_killed_extraction_leftovers_are_swept(tmp_path: Path) -> None:
    """kill -9 mid-extraction leaves .<sha>.<pid>.partial; the next open removes those of dead pids."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    bundles = tmp_path / "cache" / "bundles"
    stale = bundles / f".{'ab' * 32}.{dead.pid}.partial"
    (stale / "models").mkdir(parents=True)
    (stale / "models" / "half.bin").write_bytes(b"x" * 1000)
    live = bundles / f".{'cd' * 32}.{os.getpid()}.partial"
    live.mkdir()
    data = b"hello"
    img = tmp_path / "ok.tar.gz"
    with tarfile.open(img, "w:gz") as tar:
        for name, blob in (("manifest.json", _manifest({"a.txt": (hashlib.sha256(data).hexdigest(), 5)})),
                           ("a.txt", data)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    folder = open_bundle(img)
    assert (folder / "a.txt").read_bytes() == data
    assert not stale.exists() and live.exists()  # a running extraction (this pid) is left alone


def test_kill_9_mid_extraction_leaves_no_finished_looking_folder(tmp_path: Path) -> None:
    """A real kill -9 while 128 MiB stream out: no bundles/<sha> appears; the next open sweeps the
    partial folder and extracts the image in full."""
    import signal
    import time

    size = 128 << 20
    zeros = hashlib.sha256()
    for _ in range(size >> 20):
        zeros.update(bytes(1 << 20))
    man = _manifest({"models/m/w.bin": (zeros.hexdigest(), size)})
    img = tmp_path / "big.tar.gz"
    with open(img, "wb") as f:
        f.write(gzip.compress(_header("manifest.json", len(man)) + man + bytes((-len(man)) % 512), mtime=0))
        f.write(gzip.compress(_header("models/m/w.bin", size), mtime=0))
        for _ in range(size >> 20):
            f.write(_MIB_OF_ZEROS)
        f.write(gzip.compress(bytes(1024), mtime=0))
    cache = tmp_path / "cache"
    env = {**os.environ, "LLMOS_EDGE_CACHE": str(cache)}
    code = f"import pathlib, llmos_edge.bundle as b; b.open_bundle(pathlib.Path({str(img)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in (cache / "bundles").glob(".*.partial/models/m/w.bin") if p.stat().st_size > 0]
        if partial:
            break
        time.sleep(0.01)
    assert partial, "the extraction finished before it could be killed; make the image bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in (cache / "bundles").iterdir() if not p.name.startswith(".")] == []
    folder = open_bundle(img)
    assert (folder / "models" / "m" / "w.bin").stat().st_size == size
    assert [p.name for p in (cache / "bundles").iterdir()] == [folder.name]  # the partial was swept
