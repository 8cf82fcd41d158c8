"""Does a bundle's offline wheel install on the device? Decided from its file name (PEP 427/425 tags).

Checked in preflight, before transfer: a cp312 wheel can never install on a 3.11 device, and pip on
the device would only find out after the whole bundle was sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..spec.wheeltags import GLIBC_OF_LEGACY

_WHEEL_RE = re.compile(r"^(?P<dist>[^-]+)-(?P<ver>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
                       r"-(?P<plat>[^-]+)\.whl$")


@dataclass(frozen=True)
class DevicePlatform:
    python: str  # "3.11"
    arch: str  # normalized: x86_64, aarch64, armv7l
    libc: str  # glibc | musl | unknown
    libc_version: str  # "2.36" or ""


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def python_problem(py_tags: str, abi_tags: str, python: str) -> str | None:
    major, minor = _ver(python)
    ours = f"{major}{minor}"
    for py in py_tags.split("."):
        if py in (f"py{major}", f"py{ours}") or (py.startswith("py") and py[2:] == str(major)):
            return None
        if py == f"cp{ours}":
            return None
        if py.startswith(f"cp{major}") and "abi3" in abi_tags.split(".") and _ver_tag(py) <= (major, minor):
            return None
    return f"needs Python {_describe(py_tags, abi_tags)}, the device has {python}"


def _ver_tag(tag: str) -> tuple[int, int]:
    digits = tag[2:]
    return (int(digits[0]), int(digits[1:] or 0))


def _describe(py_tags: str, abi_tags: str) -> str:
    tags = [f"{t[2]}.{t[3:]}" if t.startswith("cp") and len(t) > 3 else t for t in py_tags.split(".")]
    return " or ".join(tags) + (" or newer (abi3)" if "abi3" in abi_tags.split(".") else "")


def platform_problem(plat_tags: str, dev: DevicePlatform) -> str | None:
    reasons = [_one_platform(tag, dev) for tag in plat_tags.split(".")]
    if any(r is None for r in reasons):
        return None
    return reasons[0]


def _one_platform(tag: str, dev: DevicePlatform) -> str | None:
    if tag == "any":
        return None
    if not tag.startswith(("manylinux", "musllinux", "linux_")):
        return f"is built for {tag}, not Linux"
    head, arch = _split_arch(tag)
    if arch != dev.arch:
        return f"is built for {arch}, the device is {dev.arch}"
    libc, need = _libc_need(head)
    if libc and dev.libc not in ("unknown", "", libc):
        return f"needs {libc}, the device has {dev.libc}"
    if need and dev.libc_version and _ver(dev.libc_version) < need:
        return f"needs {libc} {need[0]}.{need[1]}, the device has {dev.libc_version}"
    return None


def _split_arch(tag: str) -> tuple[str, str]:
    for arch in ("x86_64", "aarch64", "armv7l", "i686", "ppc64le", "s390x", "riscv64"):
        if tag.endswith("_" + arch):
            return tag[: -len(arch) - 1], arch
    head, _, arch = tag.rpartition("_")
    return head, arch


def _libc_need(head: str) -> tuple[str, tuple[int, ...] | None]:
    if head in GLIBC_OF_LEGACY:
        return "glibc", GLIBC_OF_LEGACY[head]
    m = re.fullmatch(r"(manylinux|musllinux)_(\d+)_(\d+)", head)
    if m:
        return ("glibc" if m.group(1) == "manylinux" else "musl"), (int(m.group(2)), int(m.group(3)))
    return "", None


def wheel_problem(name: str, dev: DevicePlatform) -> str | None:
    """None when pip on the device could install this wheel, else why not (for the refusal)."""
    m = _WHEEL_RE.match(name)
    if not m:
        return "is not a valid wheel file name"
    return python_problem(m["py"], m["abi"], dev.python) or platform_problem(m["plat"], dev)
