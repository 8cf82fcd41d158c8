"""Verify a bundle: the manifest signature, then every file against the manifest.

Order matters: the signature is checked first, so the file list we then trust is the signed one.
An image is verified before extraction: its manifest is read from the stream and checked, and
only then are the listed files extracted, each size- and hash-checked as it streams (extract.py).
All file problems of a folder are collected and reported together, each naming the file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import CheckFailed
from ..fsutil import sha256_file
from ..paths import cache_root
from . import manifest as mf
from .extract import open_bundle
from .keys import check_signature

_MAX_LISTED = 20
AUDIT_LOG = "audit.jsonl"  # under cache_root(): host-side record of accepted unsigned bundles


def verify_bundle(path: Path, pubkey: Path | None, *, allow_unsigned: bool = False) -> mf.Manifest:
    """Return the verified manifest of a bundle folder or image; raise CheckFailed otherwise."""
    trusted: list[str | None] = []

    def check(data: bytes, sig: bytes | None, raw: dict[str, object]) -> None:
        trusted.append(_check_trust(path, data, sig, raw, pubkey, allow_unsigned))

    folder = open_bundle(path, check)  # an image: signature checked, then listed files hash-checked
    data = _read_manifest(folder)
    raw = mf.parse(data, folder / mf.MANIFEST)
    if trusted:  # just extracted from the image under that check: every file was checked on the way
        return _accepted(path, mf.Manifest(raw=raw, folder=folder, signed_by=trusted[0],
                                           unsigned_allowed=trusted[0] is None))
    signed_by = _check_trust(folder, data, _read_signature(folder), raw, pubkey, allow_unsigned)
    problems = file_problems(folder, raw["files"])
    if problems:
        listed = problems[:_MAX_LISTED]
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise CheckFailed(f"bundle {path} does not match its manifest:\n  " + "\n  ".join(listed) + more,
                          hints=["the bundle was changed or damaged after it was built; rebuild it"])
    return _accepted(path, mf.Manifest(raw=raw, folder=folder, signed_by=signed_by,
                                       unsigned_allowed=signed_by is None))


def _accepted(path: Path, result: mf.Manifest) -> mf.Manifest:
    if result.unsigned_allowed:
        record_unsigned(path, result)
    return result


def record_unsigned(path: Path, manifest: mf.Manifest) -> None:
    """--allow-unsigned is a decision someone made: keep a line saying who accepted what, when."""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": "accepted-unsigned",
             "bundle": str(path), "name": manifest.name, "version": manifest.version,
             "user": os.environ.get("USER", ""), "pid": os.getpid()}
    log = cache_root() / AUDIT_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def _read_manifest(folder: Path) -> bytes:
    path = folder / mf.MANIFEST
    if path.is_symlink() or not path.is_file():
        raise CheckFailed(f"{folder} has no {mf.MANIFEST}; it is not an llmos-edge bundle",
                          hints=["pass the folder or .tar.gz written by `llmos-edge build`"])
    return path.read_bytes()


def _read_signature(folder: Path) -> bytes | None:
    sig_path = folder / mf.SIGNATURE
    return sig_path.read_bytes() if sig_path.is_file() and not sig_path.is_symlink() else None


def _check_trust(folder: Path, data: bytes, sig: bytes | None, raw: dict[str, object], pubkey: Path | None,
                 allow_unsigned: bool) -> str | None:
    """Key id of a valid signer, or None when the user explicitly accepted an unsigned bundle."""
    has_sig = sig is not None
    if sig is not None and pubkey is not None:
        try:
            return check_signature(data, sig, pubkey)
        except CheckFailed as exc:
            signing = raw.get("signing")
            if isinstance(signing, dict) and signing.get("key_id"):
                exc.hints.append(f"the manifest says it was signed by key id {str(signing['key_id'])[:16]}")
            raise
    if allow_unsigned:
        return None
    if not has_sig:
        raise CheckFailed(f"bundle {folder} is not signed ({mf.SIGNATURE} is missing); refusing it",
                          hints=["build it with --sign-key KEY", "or pass --allow-unsigned (recorded)"])
    from .keyplace import KEY_NAME, config_dir, public_of

    raise CheckFailed("no public key given to verify the bundle's signature; refusing to trust it",
                      hints=["pass --key PUB (the .pub from `llmos-edge keys generate`)",
                             f"serve/run/smoke/verify also look for {public_of(config_dir() / KEY_NAME)}",
                             "or pass --allow-unsigned to accept it unverified (recorded)"])


def _tree(folder: Path) -> tuple[set[str], list[str]]:
    """Regular files under folder (manifest and signature excluded), and anything that is not one."""
    files: set[str] = set()
    odd: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                odd.append(f"{rel}: is a symlink (bundles hold no links)")
            elif name in filenames:
                if p.is_file():
                    if rel not in mf.NOT_IN_FILES:
                        files.add(rel)
                else:
                    odd.append(f"{rel}: is not a regular file")
    return files, odd


def file_problems(folder: Path, expected: dict[str, dict[str, object]]) -> list[str]:
    present, problems = _tree(folder)
    for rel in sorted(expected):
        if mf.bad_relpath(rel):
            problems.append(f"{rel!r}: manifest lists a path outside the bundle")
        elif rel not in present:
            problems.append(f"{rel}: missing (listed in the manifest)")
    problems += [f"{rel}: added (not in the manifest)" for rel in sorted(present - set(expected))]
    for rel in sorted(present & set(expected)):
        entry = expected[rel]
        size = (folder / rel).stat().st_size
        if size != entry["size"]:
            problems.append(f"{rel}: size {size} != {entry['size']} in the manifest")
        elif sha256_file(folder / rel) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    return problems
