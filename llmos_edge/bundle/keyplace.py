"""Where the default signing key lives, and whether a private key file is safe to use.

The key sits in the user's config folder (XDG_CONFIG_HOME, else ~/.config), never beside the
cache: a moved cache once put it in world-writable /tmp/.config. A key that others can read, or
that sits in a folder others can write (and so swap the key), is refused with the fix.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from ..errors import UserError
from ..paths import cache_root

KEY_ENV = "LLMOS_EDGE_SIGNING_KEY"
KEY_NAME = "signing.key"


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/llmos-edge (only an absolute XDG path counts, per the spec), else ~/.config."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "llmos-edge"


def legacy_key_path() -> Path:
    """Where earlier versions put the key: derived from the cache folder (wrong, kept to warn)."""
    return cache_root().parent.parent / ".config" / "llmos-edge" / KEY_NAME


def public_of(private: Path) -> Path:
    return private.with_name(private.name.removesuffix(".key") + ".pub")


def default_signing_key() -> Path:
    """$LLMOS_EDGE_SIGNING_KEY, else config_dir()/signing.key, created (and announced) on first use."""
    configured = os.environ.get(KEY_ENV)
    if configured:
        return Path(configured)
    key = config_dir() / KEY_NAME
    if key.exists():
        return key
    old = legacy_key_path()
    # the default cache (~/.cache/llmos-edge) derived ~/.config/llmos-edge: the user's own config folder,
    # not a moved-cache place; only a key elsewhere is the unsafe leftover to refuse
    if old != key and old.exists() and old.parent != Path.home() / ".config" / "llmos-edge":
        raise UserError(
            f"the signing key is no longer looked for at {old} (a place derived from the cache "
            f"folder, which may be shared or world-writable); it belongs in {key.parent}",
            hints=[f"move it: mkdir -m 700 -p {key.parent} && mv {old} {key} && mv {public_of(old)} "
                   f"{public_of(key)} && chmod 600 {key}",
                   f"or point {KEY_ENV} at a key you keep elsewhere"],
        )
    return _create_default(key)


def _create_default(key: Path) -> Path:
    from .keys import generate_keys

    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    generate_keys(key.with_suffix(""))
    print(f"llmos-edge: created signing key {key} (public key {public_of(key)}); back it up: "
          "devices trust bundles signed by it", file=sys.stderr)
    return key


def default_public_key() -> Path | None:
    """The .pub of the default signing key, if there is one (what serve/run/smoke verify with)."""
    configured = os.environ.get(KEY_ENV)
    pub = public_of(Path(configured)) if configured else public_of(config_dir() / KEY_NAME)
    return pub if pub.is_file() else None


def check_private_key_place(path: Path) -> None:
    """Refuse a private key that others can read or replace; the message says how to fix it."""
    try:
        st = path.stat()
    except OSError:
        return  # reading it reports the missing file with its own hint
    if st.st_mode & 0o077:
        raise UserError(f"private key {path} is readable or writable by others "
                        f"(mode {stat.S_IMODE(st.st_mode):o}); refusing to use it",
                        hints=[f"chmod 600 {path}", "and consider the key leaked if others could read it"])
    check_folder_place(path)


def check_folder_place(path: Path) -> None:
    """The key's folder and its ancestors: nobody else may write there (and so swap the key)."""
    for folder in [path.absolute().parent, *path.absolute().parent.parents]:
        problem = _folder_problem(folder, folder == path.absolute().parent)
        if problem:
            raise UserError(f"private key {path} lies in {folder}, which {problem}; anyone there could "
                            "swap the key", hints=[f"keep keys in {config_dir()} (mode 700)",
                                                  f"or fix the folder: chmod go-w {folder}"])


def _folder_problem(folder: Path, own_folder: bool) -> str | None:
    try:
        st = folder.stat()
    except OSError:
        return None
    writable = st.st_mode & (0o022 if own_folder else 0o002)
    sticky = st.st_mode & stat.S_ISVTX
    if writable and (own_folder or not sticky):
        return "others can write to"
    if st.st_uid not in (0, os.getuid()):
        return f"belongs to another user (uid {st.st_uid})"
    return None
