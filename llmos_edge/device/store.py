"""Content-addressed store, staging and the verified install of a release."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import uuid

from .base import (
    _CHUNK,
    AgentError,
    Layout,
    audit,
    is_resource_error,
    link_target,
    read_stdin_json,
    resource_failure,
    safe_relpath,
    sha256_path,
    write_atomic,
)
from .lock import require_lock, work_lock
from .protocol import AGENT_FILE, RC_REFUSED, RC_VERIFY


# ---------------------------------------------------------------- store and staging
def part_path(lay: Layout, sha: str) -> str:
    return os.path.join(lay.staging, f"{sha}.part")


def check_sha(sha: str) -> str:
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise AgentError(f"not a sha256: {sha!r}", RC_REFUSED)
    return sha


def cmd_have(lay: Layout, args: argparse.Namespace) -> dict:
    """Which wanted blobs the store already holds, and how much of the others staging holds."""
    wanted = read_stdin_json().get("files", {})
    present, partial = [], {}
    for sha, size in wanted.items():
        blob = os.path.join(lay.store, check_sha(sha))
        if os.path.isfile(blob) and os.path.getsize(blob) == size:
            present.append(sha)
        elif os.path.isfile(part_path(lay, sha)):
            got = os.path.getsize(part_path(lay, sha))
            partial[sha] = got if got <= size else 0  # longer than the file can be: start over
    return {"present": present, "partial": partial}


def cmd_receive(lay: Layout, args: argparse.Namespace) -> dict:
    """Write a stream of (JSON header line, bytes) records into staging/<sha>.part at their offsets.

    One process takes the whole transfer (no per-file round trips); when the link drops, what arrived
    stays on disk and `have` reports it, so the next run resumes from there. A full disk ends it with
    the cause (not as a lost link), and the part being written is removed.
    """
    require_lock(lay, args.token)
    stream = sys.stdin.buffer
    received = 0
    while line := stream.readline():
        hdr = json.loads(line)
        path = part_path(lay, check_sha(hdr["sha"]))
        offset, remaining = int(hdr["offset"]), int(hdr["size"])
        try:
            done = _receive_one(stream, path, hdr["sha"], offset, remaining)
        except OSError as exc:
            if not is_resource_error(exc):
                raise
            with contextlib.suppress(OSError):
                os.unlink(path)
            need = remaining + int(hdr.get("after", 0))
            raise resource_failure(lay, "store the transfer", str(exc), need, received=received) from None
        received += done
        if done < remaining:
            return {"received": received, "complete": False}
    return {"received": received, "complete": True}


def _receive_one(stream: object, path: str, sha: str, offset: int, remaining: int) -> int:
    got = 0
    read = stream.read  # type: ignore[attr-defined]
    with open(path, "r+b" if offset else "wb") as f:
        if offset and f.seek(0, os.SEEK_END) != offset:
            raise AgentError(f"staged {sha[:12]} is not {offset} bytes long; rerun", RC_VERIFY)
        while got < remaining:
            chunk = read(min(_CHUNK, remaining - got))
            if not chunk:
                break
            f.write(chunk)
            got += len(chunk)
        f.flush()
    return got


def cmd_commit(lay: Layout, args: argparse.Namespace) -> dict:
    """Verify staged blobs and move the good ones into the store; bad ones are deleted.

    Each part is first renamed to a unique name so a stale receiver from a cut transfer cannot
    rename or truncate it behind our back; what it might still write through an open handle is the
    same content-addressed bytes at the same offsets, and the hash is taken after the rename.
    """
    require_lock(lay, args.token)
    wanted = read_stdin_json().get("files", {})
    committed, bad, missing = [], [], []
    for sha, size in wanted.items():
        part = part_path(lay, check_sha(sha))
        if not os.path.isfile(part):
            missing.append(sha)
            continue
        checking = os.path.join(lay.staging, f"{sha}.{uuid.uuid4().hex}.verify")
        os.replace(part, checking)
        if os.path.getsize(checking) == size and sha256_path(checking) == sha:
            os.chmod(checking, 0o444)
            os.replace(checking, os.path.join(lay.store, sha))
            committed.append(sha)
        else:
            os.unlink(checking)
            bad.append(sha)
    if bad:
        audit(lay, "staging_corrupt", blobs=bad)
    return {"committed": committed, "bad": bad, "missing": missing}


# ---------------------------------------------------------------- install
def _place(lay: Layout, sha: str, dest: str, executable: bool) -> None:
    blob = os.path.join(lay.store, sha)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if executable:
        shutil.copyfile(blob, dest)
        os.chmod(dest, 0o755)
        return
    try:
        os.link(blob, dest)
    except OSError:
        shutil.copyfile(blob, dest)


def _verify_release(folder: str, files: dict) -> list[str]:
    bad = []
    for rel, entry in files.items():
        p = os.path.join(folder, rel)
        if not os.path.isfile(p) or os.path.getsize(p) != entry["size"] or sha256_path(p) != entry["sha256"]:
            bad.append(entry["sha256"])
    return bad


def cmd_install(lay: Layout, args: argparse.Namespace) -> dict:
    """Build releases/<version>/ from the store, verifying every file, then rename it into place."""
    require_lock(lay, args.token)
    with work_lock(lay, f"install {args.version}"):
        try:
            return _install(lay, args)
        except OSError as exc:
            if is_resource_error(exc):
                raise resource_failure(lay, f"install {args.version}", str(exc)) from None
            raise


def _install(lay: Layout, args: argparse.Namespace) -> dict:
    data = read_stdin_json()
    manifest_text, sig_text = data["manifest"], data.get("signature")
    files = json.loads(manifest_text)["files"]
    version = args.version
    if not safe_relpath(version) or "/" in version:
        raise AgentError(f"unsafe version name {version!r}", RC_REFUSED)
    for rel in files:
        if not safe_relpath(rel):
            raise AgentError(f"manifest path escapes the release folder: {rel!r}", RC_REFUSED)
    final = os.path.join(lay.releases, version)
    if os.path.isdir(final) and not _verify_release(final, files):
        return {"installed": version, "reused": True}
    if os.path.isdir(final) and link_target(lay.current) == version:
        raise AgentError(
            f"release {version} is active with different content; give the bundle a new version", RC_REFUSED
        )
    missing = [
        e["sha256"] for e in files.values() if not os.path.isfile(os.path.join(lay.store, e["sha256"]))
    ]
    if missing:
        raise AgentError("blobs missing from the store", RC_VERIFY, missing=sorted(set(missing)))
    for name in os.listdir(lay.releases):  # left by an install that was killed (we hold the work lock)
        if name.startswith(".") and name.endswith(".partial"):
            shutil.rmtree(os.path.join(lay.releases, name), ignore_errors=True)
    tmp = os.path.join(lay.releases, f".{version}.{uuid.uuid4().hex}.partial")
    os.makedirs(tmp)
    try:
        for rel, entry in files.items():
            _place(lay, entry["sha256"], os.path.join(tmp, rel), rel.startswith("bin/"))
        bad = _verify_release(tmp, files)
        if bad:
            for sha in bad:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(lay.store, sha))
            raise AgentError("store blobs failed verification", RC_VERIFY, missing=sorted(set(bad)))
        write_atomic(os.path.join(tmp, "manifest.json"), manifest_text.encode())
        if sig_text is not None:
            write_atomic(os.path.join(tmp, "manifest.sig"), sig_text.encode())
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _self_install(lay, final)
    audit(lay, "install", version=version, unsigned=sig_text is None, **data.get("audit", {}))
    return {"installed": version, "reused": False}


def _self_install(lay: Layout, release: str) -> None:
    src = os.path.join(release, AGENT_FILE)
    if os.path.isfile(src):
        with open(src, "rb") as f:
            write_atomic(os.path.join(lay.root, AGENT_FILE), f.read(), 0o755)


def cmd_clean_staging(lay: Layout, args: argparse.Namespace) -> dict:
    require_lock(lay, args.token)
    removed = 0
    for name in os.listdir(lay.staging) if os.path.isdir(lay.staging) else []:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(lay.staging, name))
            removed += 1
    return {"removed": removed}


