"""Wheel-tag preflight rules (pure functions over file names; the end-to-end refusal is in test_venv)."""

from __future__ import annotations

import pytest

from llmos_edge.deploy.wheeltags import DevicePlatform, wheel_problem

PI = DevicePlatform(python="3.11", arch="aarch64", libc="glibc", libc_version="2.36")
PC = DevicePlatform(python="3.11", arch="x86_64", libc="glibc", libc_version="2.36")

# names pip really downloaded for the host target (manylinux x86_64, cp311)
ACCEPTED_ON_PC = [
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    "tokenizers-0.23.3-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "hf_xet-1.8.0-cp38-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "flatbuffers-25.12.19-py2.py3-none-any.whl",
    "pyyaml-6.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
]


@pytest.mark.parametrize("name", ACCEPTED_ON_PC)
def test_host_wheels_fit_a_311_x86_device(name: str) -> None:
    assert wheel_problem(name, PC) is None


@pytest.mark.parametrize(
    ("name", "dev", "why"),
    [
        ("numpy-2.4.6-cp312-cp312-manylinux_2_17_x86_64.whl", PC, "needs Python 3.12"),
        ("x-1-cp312-abi3-manylinux_2_17_x86_64.whl", PC, "3.12 or newer (abi3)"),
        ("onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl", PI, "x86_64, the device is aarch64"),
        ("x-1-cp311-cp311-manylinux_2_39_aarch64.whl", PI, "needs glibc 2.39, the device has 2.36"),
        ("x-1-cp311-cp311-musllinux_1_2_x86_64.whl", PC, "needs musl"),
        ("x-1-cp311-cp311-win_amd64.whl", PC, "not Linux"),
        ("not-a-wheel.whl", PC, "not a valid wheel file name"),
    ],
)
def test_misfit_wheels_say_why(name: str, dev: DevicePlatform, why: str) -> None:
    problem = wheel_problem(name, dev)
    assert problem is not None and why in problem


def test_aarch64_wheels_fit_a_pi() -> None:
    assert wheel_problem("onnxruntime_genai-0.18.0-cp311-cp311-manylinux_2_28_aarch64.whl", PI) is None
    assert wheel_problem("x-1-cp311-cp311-linux_armv7l.whl", PI) is not None
