"""Fixtures for the ESP32 host-offload tests: gcc-built C protocol driver, socat pty pairs."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "firmware_templates" / "esp32s3-host-offload" / "main"
HARNESS_DIR = Path(__file__).resolve().parent / "harness"


def _gcc(out: Path, main: str, *flags: str) -> Path:
    cmd = ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", *flags, f"-I{PROTO_DIR}",
           str(HARNESS_DIR / main), str(PROTO_DIR / "llmos_proto.c"), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="session")
def harness_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C side: llmos_proto.c linked into a host driver that plays the ESP32."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install -y gcc)")
    out = tmp_path_factory.mktemp("c") / "proto_harness"
    try:  # link code under ASan/UBSan too, while the pty tests drive it
        return _gcc(out, "proto_harness.c", "-O1", "-g", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all")
    except subprocess.CalledProcessError:
        return _gcc(out, "proto_harness.c", "-O2")


@pytest.fixture(scope="session")
def fuzz_bin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """The C fuzz driver, with ASan/UBSan when this gcc supports them (bool says which)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install -y gcc)")
    out = tmp_path_factory.mktemp("fuzz") / "proto_fuzz"
    try:
        return _gcc(out, "proto_fuzz.c", "-O1", "-g", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all"), True
    except subprocess.CalledProcessError:
        return _gcc(out, "proto_fuzz.c", "-O2"), False


class PtyPair:
    """A socat pty pair with stable link names, so it can be 'unplugged' and 'replugged'."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a, self.b = a, b
        self.proc: subprocess.Popen[bytes] | None = None

    def plug(self) -> None:
        if shutil.which("socat") is None:
            pytest.skip("socat is not installed (apt-get install -y socat)")
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.a.exists() and self.b.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.01)

    def unplug(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None
        deadline = time.monotonic() + 5
        while (self.a.exists() or self.b.exists()) and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture
def make_pty(tmp_path: Path) -> Iterator[Callable[[str], PtyPair]]:
    pairs: list[PtyPair] = []

    def make(name: str) -> PtyPair:
        pair = PtyPair(tmp_path / f"{name}-dev", tmp_path / f"{name}-host")
        pair.plug()
        pairs.append(pair)
        return pair

    yield make
    for p in pairs:
        p.unplug()


@pytest.fixture(scope="session")
def runtime_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real llmos runtime serving the shared tiny decoder on an ephemeral loopback port."""
    import os

    try:
        model = Path(request.getfixturevalue("tiny_decoder_dir"))
    except pytest.FixtureLookupError:
        if not os.environ.get("LLMOS_TEST_TINY_DECODER"):
            pytest.skip("needs the shared `tiny_decoder_dir` fixture (tests/conftest.py) or "
                        "$LLMOS_TEST_TINY_DECODER")
        model = Path(os.environ["LLMOS_TEST_TINY_DECODER"])
    from llmos_edge.runtime.config import parse_config
    from llmos_edge.runtime.server import RunningServer

    tmp = tmp_path_factory.mktemp("rt")
    cfg = parse_config({"host": "127.0.0.1", "port": 0, "audit_log": str(tmp / "audit.jsonl"),
                        "models": [{"id": "tiny", "path": str(model)}]}, tmp)
    server = RunningServer(cfg).start()
    yield server.url
    server.stop()
