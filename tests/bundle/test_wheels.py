"""Offline wheels for the target platform."""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from llmos_edge.bundle import BundleResult
from llmos_edge.bundle import wheels as wh


def test_pins_follow_this_environment() -> None:
    pins = wh.pinned_requirements(encrypted=False)
    assert pins == [f"{d}=={metadata.version(d)}" for d in wh.RUNTIME_DISTS]
    assert any(p.startswith("cryptography==") for p in wh.pinned_requirements(encrypted=True))
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert wh.pinned_requirements(False, here) == pins
    older = wh.pinned_requirements(False, "3.9")
    assert older == [p.replace("==", "<=") for p in pins]


def test_download_command_names_every_platform(tmp_path: Path) -> None:
    plats = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
    cmd = wh.download_command(plats, "3.11", ["numpy==2.0.0"], tmp_path)
    assert cmd[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and cmd[cmd.index("--implementation") + 1] == "cp"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"] == list(plats)
    assert cmd[-1] == "numpy==2.0.0"


def test_cache_key_covers_inputs() -> None:
    base = wh.cache_key(("a",), "3.11", ["x==1"])
    assert base == wh.cache_key(("a",), "3.11", ["x==1"])
    assert len({base, wh.cache_key(("b",), "3.11", ["x==1"]), wh.cache_key(("a",), "3.10", ["x==1"]),
                wh.cache_key(("a",), "3.11", ["x==2"])}) == 4


def test_no_wheels_leaves_them_out(build: Callable[..., BundleResult]) -> None:
    res = build(wheels=False)
    assert not (res.folder / "wheels").exists() and res.manifest["wheels"] is None


@pytest.mark.slow
def test_real_aarch64_wheels(build: Callable[..., BundleResult]) -> None:
    """Downloads the real manylinux aarch64 wheels from the package index (~100 MB, network)."""
    res = build(target="rpi4", wheels=True)
    names = res.manifest["wheels"]["files"]
    for dist in ("onnxruntime", "onnxruntime_genai", "numpy", "tokenizers"):
        hits = [n for n in names if n.lower().startswith(dist + "-")]
        assert hits, f"no {dist} wheel in {names}"
        assert hits[0].startswith(f"{dist}-{metadata.version(dist.replace('_', '-'))}-")
    for name in names:
        assert "x86_64" not in name and ("aarch64" in name or "none-any" in name), name
        assert f"wheels/{name}" in res.manifest["files"]
        with zipfile.ZipFile(res.folder / "wheels" / name) as z:
            assert any(n.endswith("/WHEEL") for n in z.namelist())
