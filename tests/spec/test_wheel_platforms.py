"""Offline-wheel platforms derive from the target's glibc, as packaging.tags does for a running system."""

from __future__ import annotations

import platform

import pytest
from packaging.tags import parse_tag
from packaging.tags import platform_tags as running_platform_tags

from llmos_edge.spec.loader import load_target
from llmos_edge.spec.wheeltags import manylinux_platforms


def test_matches_packaging_for_this_machine() -> None:
    libc, version = platform.libc_ver()
    if libc != "glibc":
        pytest.skip(f"this machine's libc is {libc or 'unknown'}, packaging.tags lists no manylinux tags")
    arch = platform.machine()
    expected = [t for t in running_platform_tags() if t.startswith("manylinux")]
    assert list(manylinux_platforms(arch, version)) == expected


@pytest.mark.parametrize("target", ["rpi5", "rpi5-litert", "rpi4", "jetson-orin-nano"])
def test_aarch64_targets_accept_litert_manylinux_2_27(target: str) -> None:
    """ai-edge-litert 2.3.0 publishes only manylinux_2_27_aarch64: the hand-written list missed it."""
    tags = load_target(target).platform.wheel_platforms
    assert "manylinux_2_27_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert all(parse_tag(f"cp311-cp311-{t}") for t in tags)
    assert not any(t.endswith("x86_64") or "2_37" in t or "2_16" in t for t in tags)


def test_host_derives_from_this_machine() -> None:
    plat = load_target("host").platform
    assert plat.libc_min == platform.libc_ver()[1]
    assert f"manylinux_2_17_{platform.machine()}" in plat.wheel_platforms


def test_x86_keeps_the_old_legacy_aliases() -> None:
    tags = manylinux_platforms("x86_64", "2.17")
    assert tags[:2] == ("manylinux_2_17_x86_64", "manylinux2014_x86_64")
    assert "manylinux1_x86_64" in tags and "manylinux2010_x86_64" in tags
    assert "manylinux1_aarch64" not in manylinux_platforms("aarch64", "2.28")


@pytest.mark.parametrize("bad", ["2", "2.x", "3.1", "2.36\n", "", "-2.5"])
def test_bad_libc_min_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="libc_min"):
        manylinux_platforms("aarch64", bad)
