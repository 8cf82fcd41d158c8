"""HIL fixtures: a booted aarch64 QEMU guest (or a configured real device) and the quick qemu-user tier.

All tests here are marked `hil`. They skip, with the reason, when LLMOS_EDGE_HIL=0, when the QEMU tools
are missing, or when not root. The first run builds the guest image (~10-13 min, cached under
cache_root()/qemu); later runs boot in ~15 s. One guest at a time: each test gets its own, stopped
after (the systemd module shares one persistent guest across its tests and reboots it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds the `ci` package

from ci.devices import NOT_CONFIGURED, HilDevice, configured_devices
from ci.qemu.cache import Timings
from ci.qemu.guest import QemuGuest
from ci.qemu.image import GuestImage
from ci.qemu.rootfs import Rootfs
from ci.qemu.tools import missing_tools

HERE = Path(__file__).resolve().parent
BundleFactory = Callable[..., Path]


DEFAULT_COST_S = 600.0
IMAGE_COST_S = 1800.0  # a guest image built from nothing, on a loaded 2-core runner


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.hil)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip, saying why, a HIL test that cannot finish before $LLMOS_EDGE_HIL_DEADLINE (set by .ci/run).

    Each test declares its worst case with @pytest.mark.hil_cost(seconds) (its timeout is the same
    number, so it can never run past it); a missing guest image adds IMAGE_COST_S. Tests marked
    hil_must_run (the systemd boot path) are never skipped by the budget: .ci/run runs them first.
    """
    deadline = float(os.environ.get("LLMOS_EDGE_HIL_DEADLINE") or "inf")
    if deadline == float("inf") or HERE not in Path(str(item.fspath)).resolve().parents:
        return
    if item.get_closest_marker("hil_must_run"):
        return
    marker = item.get_closest_marker("hil_cost")
    need = float(marker.args[0]) if marker else DEFAULT_COST_S
    if not _image_cached():
        need += IMAGE_COST_S
    left = deadline - time.time()
    if need > left:
        pytest.skip(f"CI time budget: this test needs up to {need:.0f} s, {max(left, 0):.0f} s are left "
                    "before CI's limit (LLMOS_EDGE_HIL_DEADLINE); by hand: scripts/test -m hil tests/hil")


def _image_cached() -> bool:
    from ci.qemu.image import image_cached

    return image_cached()


def qemu_skip_reason() -> str | None:
    if os.environ.get("LLMOS_EDGE_HIL") == "0":
        return "LLMOS_EDGE_HIL=0 turns the QEMU hardware-in-the-loop tier off"
    missing = missing_tools()
    if missing:
        return "QEMU tier needs " + ", ".join(missing)
    if os.geteuid() != 0:
        return "QEMU tier needs root (debootstrap, chroot, binfmt_misc)"
    return None


@pytest.fixture(scope="session")
def hil_timings() -> Iterator[Timings]:
    t = Timings()
    yield t
    if t.steps:
        print("\nHIL step timings:\n" + t.table())


@pytest.fixture(scope="session")
def guest_rootfs(hil_timings: Timings) -> Rootfs:
    reason = qemu_skip_reason()
    if reason:
        pytest.skip(reason)
    from ci.qemu.rootfs import build_rootfs

    return build_rootfs(hil_timings)


@pytest.fixture(scope="session")
def guest_image(guest_rootfs: Rootfs, hil_timings: Timings) -> GuestImage:
    from ci.qemu.image import build_image

    return build_image(hil_timings)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short path: the QMP unix socket path must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="llmos-hil-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def qemu_guest(guest_image: GuestImage, short_tmp: Path, hil_timings: Timings) -> Iterator[QemuGuest]:
    """A freshly booted guest (snapshot=on: every test starts from the same clean disk).

    PID 1 is the minimal init unless LLMOS_EDGE_QEMU_INIT=systemd: the deploy agent of a non-root login
    never uses systemd, and systemd needs minutes to reach sshd under a loaded TCG host.
    """
    init = os.environ.get("LLMOS_EDGE_QEMU_INIT", "fast")
    guest = QemuGuest(guest_image, short_tmp / "vm", init=init)
    guest.start()
    hil_timings.add(f"boot to ssh ({init} init)", guest.boot_seconds, False)
    try:
        yield guest
    finally:
        guest.stop()


def guest_device(guest: QemuGuest, keydir: Path) -> HilDevice:
    return HilDevice("qemu-aarch64", f"{guest.user}@{guest.host}:{guest.port}",
                     guest.copy_key(keydir / "id_ed25519"), guest.known_hosts, "rpi5")


@pytest.fixture(params=["qemu", "real"])
def hil_device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HilDevice]:
    """The same test against the QEMU guest and, when configured, the first real device."""
    if request.param == "real":
        devices = configured_devices()
        if not devices:
            pytest.skip(NOT_CONFIGURED)
        yield devices[0]
        return
    guest: QemuGuest = request.getfixturevalue("qemu_guest")
    yield guest_device(guest, tmp_path)


@pytest.fixture
def signing_pair(tmp_path: Path) -> tuple[Path, Path]:
    from llmos_edge.bundle import generate_keys

    return generate_keys(tmp_path / "hil-sign")


@pytest.fixture
def bundle_for(tiny_decoder_dir: Path, tmp_path: Path, signing_pair: tuple[Path, Path]) -> BundleFactory:
    """make_bundle with offline wheels; `expect` sets a golden answer the tiny model will never give."""
    from llmos_edge.bundle import make_bundle
    from llmos_edge.bundle.spec import BundleSpec
    from llmos_edge.spec import Golden, load_target

    def make(version: str, *, target: str = "rpi5", python: str | None = None, wheels: bool = True,
             expect: tuple[str, ...] = ()) -> Path:
        tgt = load_target(target)
        if python:
            tgt = tgt.model_copy(update={"platform": tgt.platform.model_copy(update={"python": python})})
        spec = BundleSpec(target=tgt, recipe="tiny", version=version, models={"tiny": tiny_decoder_dir},
                          golden=(Golden(prompt="Say hello.", max_tokens=4, expect_contains=expect),),
                          signing_key=signing_pair[0], wheels=wheels)
        return make_bundle(spec, tmp_path / f"b-{target}-{version}-{python}").image

    return make
