"""The build's two halves for esp32s3-host-offload: the host bundle's target and wheels, the firmware."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_edge import pipeline as b
from llmos_edge.bundle import make_bundle
from llmos_edge.bundle import wheels as wh
from llmos_edge.errors import UserError
from llmos_edge.esp32.hostpkg import BRIDGE_DISTS, bridge_context, runtime_url
from llmos_edge.paths import cache_root
from llmos_edge.spec import load_target
from tests.bundle.conftest import write_model_dir

from .conftest import TARGET, host_spec


def test_runtime_target_is_the_host_profile_named_after_the_esp32_target() -> None:
    plan = b.plan(TARGET, "smollm2-135m-instruct")
    host = load_target("rpi5")
    t = b._runtime_target(plan)
    assert (t.name, t.bundle_kind, t.esp32) == (TARGET, "esp32s3-host-offload", plan.target.esp32)
    assert t.platform == host.platform and t.service == host.service and t.install == host.install
    assert t.transport.kind == "ssh"  # deploy reaches the host over SSH; the chip is flashed over serial
    plain = b.plan("rpi5", "smollm2-135m-instruct")
    assert b._runtime_target(plain) is plain.target


def test_firmware_half_is_the_esp_idf_project_without_host_files(tmp_path: Path) -> None:
    plan = b.plan(TARGET, "smollm2-135m-instruct")
    fw = b._maybe_firmware(plan, tmp_path, "1.0.0")
    assert fw is not None and fw["project_dir"] == "firmware"
    root = tmp_path / "firmware"
    assert (root / "CMakeLists.txt").is_file() and (root / "main" / "llmos_proto.c").is_file()
    assert not (root / "host").exists() and not list(root.rglob("*.service"))
    assert b._maybe_firmware(b.plan("rpi5", "smollm2-135m-instruct"), tmp_path / "x", "1.0.0") is None


def test_offline_wheels_carry_pyserial_for_the_bridge(tmp_path: Path) -> None:
    """wheels=True with the wheel cache filled beforehand (no network here): pyserial is pinned and copied."""
    spec = host_spec(write_model_dir(tmp_path / "model"), None, wheels=True)
    plat = spec.target.platform
    reqs = wh.pinned_requirements(False, plat.python, BRIDGE_DISTS)
    assert any(r.startswith("pyserial") for r in reqs)
    assert not any(r.startswith("pyserial") for r in wh.pinned_requirements(False, plat.python))
    seeded = cache_root() / "wheels" / wh.cache_key(plat.wheel_platforms, plat.python, reqs)
    seeded.mkdir(parents=True)
    for name in ("pyserial-3.5-py2.py3-none-any.whl", "numpy-2.0.0-cp311-cp311-manylinux_2_28_aarch64.whl"):
        (seeded / name).write_bytes(b"stand-in wheel bytes: the bundler copies them unopened")
    res = make_bundle(spec, tmp_path / "out")
    wheels = res.manifest["wheels"]
    assert "pyserial-3.5-py2.py3-none-any.whl" in wheels["files"]
    assert "wheels/pyserial-3.5-py2.py3-none-any.whl" in res.manifest["files"]
    assert [r for r in wheels["requirements"] if r.startswith("pyserial")] == \
           [r for r in reqs if r.startswith("pyserial")]


def test_bridge_values_follow_runtime_config_and_target(tmp_path: Path) -> None:
    target = host_spec(tmp_path, None).target
    assert runtime_url({"host": "0.0.0.0", "port": 9000}) == "http://127.0.0.1:9000"
    assert runtime_url({"host": "::1", "port": 9000}) == "http://[::1]:9000"
    ctx = bridge_context(target, {"host": "127.0.0.1", "port": 8088, "api_key_env": "LLMOS_KEY"})
    assert (ctx["port"], ctx["baud"]) == ("/dev/ttyACM0", 921600)
    assert ctx["extra_args"] == " --api-key-env LLMOS_KEY"
    with pytest.raises(UserError, match="not an environment variable name"):
        bridge_context(target, {"host": "127.0.0.1", "port": 1, "api_key_env": "X; rm -rf /"})


def test_host_bundle_image_is_reproducible(tmp_path: Path) -> None:
    """The bridge copy (modes, generated files) keeps two builds of the same inputs byte-identical."""
    model = write_model_dir(tmp_path / "model")
    first = make_bundle(host_spec(model, None), tmp_path / "a")
    second = make_bundle(host_spec(model, None), tmp_path / "b")
    assert "bridge/llmos_bridge/__main__.py" in first.manifest["files"]
    assert first.image.read_bytes() == second.image.read_bytes()
