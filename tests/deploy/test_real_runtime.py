"""A bundle made by llmos_edge.bundle with a real tiny model: the real runtime serves it on the device
and its real smoke test passes there; a config-only update then sends almost nothing.

Device Python: /root is 0700, so the device user cannot run the project venv's interpreter. The test
gives the device a world-readable venv of the system python3 that sees the project's site-packages
(same CPython 3.11 ABI) and passes it as --device-python (fixture in conftest.py). The agent's other
path, a venv built from the bundle's offline wheels, is tested in tests/deploy_wheels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos_edge.deploy.run import SmokeFailed

from .devices import Device, free_port
from .helpers import assert_serves_tiny, run_deploy


def _bundle(
    out: Path, model: Path, version: str, key: Path, port: int, threads: int, first_token_ms: float = 0
) -> Path:
    from llmos_edge.bundle.build import make_bundle
    from llmos_edge.bundle.spec import BundleSpec
    from llmos_edge.spec import load_target
    from llmos_edge.spec.models import Golden

    target = load_target("host")
    if first_token_ms:
        smoke = target.smoke.model_copy(update={"max_first_token_ms": first_token_ms})
        target = target.model_copy(update={"smoke": smoke})
    spec = BundleSpec(
        target=target,
        recipe="tiny",
        version=version,
        models={"tiny": model},
        golden=(Golden(prompt="Say hi", max_tokens=4),),
        signing_key=key,
        wheels=False,
        config_overrides={"port": port, "threads": threads},
    )
    return make_bundle(spec, out).folder


def test_real_runtime_serves_tiny_model_on_device(
    device: Device,
    tiny_decoder_fp32_dir: Path,
    tmp_path: Path,
    signing_key: tuple[Path, Path],
    device_python: str,
) -> None:
    port = free_port()
    device.runtime_port = port
    b1 = _bundle(tmp_path / "b1", tiny_decoder_fp32_dir, "1.0.0", signing_key[0], port, threads=1)
    rep = run_deploy(device, b1, signing_key[1], device_python=device_python, smoke_timeout=120)
    assert rep.status == "ok", rep
    digest = json.loads(rep.smoke[rep.smoke.index("{") :])  # the device's smoke verdict, in the report
    assert digest["ok"] is True and digest["results"][0]["name"] == "golden-1"
    assert digest["summary"]["first_token_ms_median"] > 0
    assert_serves_tiny(port)
    b2 = _bundle(tmp_path / "b2", tiny_decoder_fp32_dir, "1.0.1", signing_key[0], port, threads=2)
    rep2 = run_deploy(device, b2, signing_key[1], device_python=device_python, smoke_timeout=120)
    assert rep2.status == "ok"
    # only what changed went over the link: the config/smoke files, never the model weights
    m1, m2 = (json.loads((b / "manifest.json").read_text())["files"] for b in (b1, b2))
    old_hashes = {e["sha256"] for e in m1.values()}
    changed = {e["sha256"]: e["size"] for e in m2.values() if e["sha256"] not in old_hashes}
    assert rep2.bytes_sent == sum(changed.values()) > 0
    assert not any(rel.startswith("models/") for rel, e in m2.items() if e["sha256"] in changed)


def test_latency_scale_lets_a_slow_stand_in_pass_and_is_audited(
    device: Device,
    tiny_decoder_fp32_dir: Path,
    tmp_path: Path,
    signing_key: tuple[Path, Path],
    device_python: str,
) -> None:
    """The exact bundle, a first-token limit no device meets: refused at scale 1, kept at scale 1e6."""
    port = free_port()
    device.runtime_port = port
    b = _bundle(tmp_path / "b", tiny_decoder_fp32_dir, "1.0.0", signing_key[0], port, 1, first_token_ms=0.01)
    with pytest.raises(SmokeFailed) as info:
        run_deploy(device, b, signing_key[1], device_python=device_python, smoke_timeout=120)
    assert "first-token latency" in info.value.smoke
    rep = run_deploy(device, b, signing_key[1], device_python=device_python, smoke_timeout=120,
                     retry_failed=True, smoke_latency_scale=1e6)
    assert rep.status == "ok", rep
    events = [json.loads(line) for line in device.state("audit.jsonl").read_text().splitlines()]
    assert [e.get("latency_scale") for e in events if e["event"] == "activate"] == [1e6]
