"""The default signing key: in the user's config folder, announced once, refused when others can
read or replace it; never derived from the cache path (a moved cache once put it in /tmp/.config)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from llmos_edge.bundle.keyplace import default_public_key, default_signing_key
from llmos_edge.bundle.keys import generate_keys, load_signing_key
from llmos_edge.errors import UserError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("LLMOS_EDGE_SIGNING_KEY", raising=False)
    (tmp_path / "home").mkdir(mode=0o755)
    return tmp_path / "home"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_first_use_creates_key_in_config_dir_and_says_where(home: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # a moved cache must not move the key (it used to land in <cache>/../../.config)
    monkeypatch.setenv("LLMOS_EDGE_CACHE", str(tmp_path / "shared" / "cache"))
    key = default_signing_key()
    assert key == home / ".config" / "llmos-edge" / "signing.key"
    assert _mode(key) == 0o600 and _mode(key.parent) == 0o700
    assert _mode(key.with_name("signing.pub")) == 0o644
    assert f"created signing key {key}" in capsys.readouterr().err
    assert not (tmp_path / ".config").exists()
    assert default_signing_key() == key and capsys.readouterr().err == ""  # announced once
    assert default_public_key() == key.with_name("signing.pub")
    load_signing_key(key)


def test_xdg_config_home_wins(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_signing_key() == tmp_path / "cfg" / "llmos-edge" / "signing.key"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")  # not absolute: ignored, as the spec says
    assert default_signing_key().is_relative_to(home)


def test_key_at_old_cache_derived_place_is_not_used_silently(home: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_EDGE_CACHE", str(tmp_path / "a" / "cache"))
    old, _ = generate_keys(tmp_path / ".config" / "llmos-edge" / "signing")
    with pytest.raises(UserError) as info:
        default_signing_key()
    err = info.value
    assert str(old) in err.message and "no longer looked for" in err.message
    assert any(f"mv {old} {home / '.config' / 'llmos-edge' / 'signing.key'}" in h for h in err.hints)
    assert not (home / ".config").exists()  # no second key made behind the user's back


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_loose_key_permissions_refused_with_fix(tmp_path: Path, mode: int) -> None:
    key, _ = generate_keys(tmp_path / "k" / "release")
    key.chmod(mode)
    with pytest.raises(UserError, match="readable or writable by others") as info:
        load_signing_key(key)
    assert f"chmod 600 {key}" in info.value.hints


@pytest.mark.parametrize("folder_mode", [0o777, 0o1777, 0o775])
def test_key_in_writable_folder_refused(tmp_path: Path, folder_mode: int) -> None:
    key, _ = generate_keys(tmp_path / "shared" / "release")
    (tmp_path / "shared").chmod(folder_mode)
    with pytest.raises(UserError, match="others can write to"):
        load_signing_key(key)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a folder to another user")
def test_key_in_folder_owned_by_someone_else_refused(tmp_path: Path) -> None:
    key, _ = generate_keys(tmp_path / "theirs" / "release")
    os.chown(tmp_path / "theirs", 65534, 65534)
    with pytest.raises(UserError, match="belongs to another user"):
        load_signing_key(key)


def test_signing_via_env_key_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, pub = generate_keys(tmp_path / "k" / "ci")
    monkeypatch.setenv("LLMOS_EDGE_SIGNING_KEY", str(key))
    assert default_signing_key() == key and default_public_key() == pub
    key.chmod(0o644)
    with pytest.raises(UserError):
        load_signing_key(default_signing_key())


def test_generate_refuses_a_writable_folder(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(UserError, match="others can write to"):
        generate_keys(shared / "release")
    assert list(shared.iterdir()) == []


def test_key_in_home_config_is_no_leftover(home: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The default cache derives ~/.config/llmos-edge: the user's own folder, not an unsafe leftover."""
    monkeypatch.delenv("LLMOS_EDGE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    generate_keys(home / ".config" / "llmos-edge" / "signing")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_signing_key() == tmp_path / "cfg" / "llmos-edge" / "signing.key"
