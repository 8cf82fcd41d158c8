"""Verify a bundle: the manifest signature, then every file against the manifest.

Order matters: the signature is checked first, so the file list we then trust is the signed one.
All file problems are collected and reported together, each naming the file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path, PurePosixPath

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
    folder = open_bundle(path)
    data = _read_manifest(folder)
    raw = mf.parse(data, folder / mf.MANIFEST)
    signed_by = _check_trust(folder, data, raw, pubkey, allow_unsigned)
    problems = file_problems(folder, raw["files"])
    if problems:
        listed = problems[:_MAX_LISTED]
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise CheckFailed(f"bundle {path} does not match its manifest:\n  " + "\n  ".join(listed) + more,
                          hints=["the bundle was changed or damaged after it was built; rebuild it"])
    result = mf.Manifest(raw=raw, folder=folder, signed_by=signed_by, unsigned_allowed=signed_by is None)
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


def _check_trust(folder: Path, data: bytes, raw: dict[str, object], pubkey: Path | None,
                 allow_unsigned: bool) -> str | None:
    """Key id of a valid signer, or None when the user explicitly accepted an unsigned bundle."""
    sig_path = folder / mf.SIGNATURE
    has_sig = sig_path.is_file() and not sig_path.is_symlink()
    if has_sig and pubkey is not None:
        try:
            return check_signature(data, sig_path.read_bytes(), pubkey)
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
    raise CheckFailed("no public key given to verify the bundle's signature; refusing to trust it",
                      hints=["pass --key PUB (the .pub from `llmos-edge keys generate`)",
                             "or pass --allow-unsigned to accept it unverified (recorded)"])


def _bad_relpath(rel: str) -> bool:
    p = PurePosixPath(rel)
    return (not rel or p.is_absolute() or "\\" in rel or any(x in ("..", ".", "") for x in rel.split("/"))
            or rel in mf.NOT_IN_FILES)


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
        if _bad_relpath(rel):
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
