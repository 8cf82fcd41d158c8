"""Quick tier: the bundle's own runtime answers a request under qemu-user in the arm64 rootfs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.qemu.cache import Timings
from ci.qemu.guest import free_port
from ci.qemu.quick import ChrootDevice, build_site
from ci.qemu.rootfs import Rootfs

BUNDLE_IN_DEVICE = "/opt/llmos-bundle"


@pytest.fixture(scope="session")
def aarch64_site(guest_rootfs: Rootfs, hil_timings: Timings) -> Path:
    """The runtime's pinned aarch64 wheels (the bundler's own cache), installed into a site dir."""
    from llmos_edge.bundle.wheels import fetch_wheels
    from llmos_edge.spec import load_target

    plat = load_target("rpi5").platform
    with hil_timings.step("fetch aarch64 wheels"):
        wheels = fetch_wheels(plat.wheel_platforms, plat.python, False)
    return build_site(wheels, hil_timings, str(plat.python))


@pytest.fixture
def rpi5_bundle(tiny_decoder_dir: Path, tmp_path: Path) -> Path:
    from llmos_edge.bundle import make_bundle
    from llmos_edge.bundle.spec import BundleSpec
    from llmos_edge.spec import load_target

    spec = BundleSpec(target=load_target("rpi5"), recipe="tiny", version="0.1.0",
                      models={"tiny": tiny_decoder_dir}, wheels=False)
    return make_bundle(spec, tmp_path / "bundle").folder


@pytest.fixture
def chroot_device(guest_rootfs: Rootfs, aarch64_site: Path, short_tmp: Path) -> Iterator[ChrootDevice]:
    with ChrootDevice(guest_rootfs, short_tmp, aarch64_site) as dev:
        yield dev


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"runtime exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"runtime did not answer {url} within {timeout:.0f} s")


@pytest.mark.hil_cost(900)
@pytest.mark.timeout(900, func_only=True)
def test_runtime_answers_under_qemu_user(chroot_device: ChrootDevice, rpi5_bundle: Path, tmp_path: Path,
                                         hil_timings: Timings) -> None:
    arch = chroot_device.run(["python3", "-c", "import platform; print(platform.machine())"])
    assert arch.stdout.strip() == "aarch64", arch.stderr  # really the arm64 userland, emulated
    chroot_device.put(rpi5_bundle, BUNDLE_IN_DEVICE)
    port = free_port()
    env = {"PYTHONPATH": f"/opt/site:{BUNDLE_IN_DEVICE}/runtime"}
    t0 = time.monotonic()
    proc = chroot_device.popen(["python3", "-m", "llmos_runtime", "serve", "--config",
                                f"{BUNDLE_IN_DEVICE}/config/runtime.json", "--port", str(port)],
                               env, log=tmp_path / "runtime.log")
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, 180)
        hil_timings.add("quick tier: runtime up", time.monotonic() - t0, False)
        body = json.dumps({"model": "tiny", "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body.encode(),
                                     {"Content-Type": "application/json"})
        t1 = time.monotonic()
        with urllib.request.urlopen(req, timeout=120) as resp:
            answer = json.loads(resp.read())
        hil_timings.add("quick tier: one request", time.monotonic() - t1, False)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    log = (tmp_path / "runtime.log").read_text(errors="replace")
    assert answer["object"] == "chat.completion", log[-2000:]
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    assert answer["usage"]["completion_tokens"] > 0
