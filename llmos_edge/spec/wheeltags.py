"""manylinux platform tags: the one table of glibc-tag knowledge (PEP 600 and the legacy aliases).

pip's `--platform manylinux_2_28_aarch64` matches that tag only; it does not widen it to older glibc
tags, so a wheel tagged manylinux_2_27 (ai-edge-litert) is never found. Targets therefore name their
oldest glibc (`libc_min`) and the pip platforms are derived from it: every manylinux tag a device with
that glibc accepts, newest first, the same list packaging.tags computes for a running system.
"""

from __future__ import annotations

import re

LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
GLIBC_OF_LEGACY = {name: ver for ver, name in LEGACY_MANYLINUX.items()}
_X86 = ("x86_64", "i686")
_LEGACY_2014_ARCHS = (*_X86, "aarch64", "armv7l", "ppc64", "ppc64le", "s390x")


def parse_glibc(text: str) -> tuple[int, int]:
    """"2.36" -> (2, 36); anything else is a target-file error the caller reports."""
    m = re.fullmatch(r"(\d+)\.(\d+)", text)
    if not m:
        raise ValueError(f"libc_min {text!r} is not a glibc version like '2.36'")
    return int(m.group(1)), int(m.group(2))


def _legacy_ok(legacy: str, arch: str) -> bool:
    return arch in _X86 if legacy in ("manylinux1", "manylinux2010") else arch in _LEGACY_2014_ARCHS


def manylinux_platforms(arch: str, libc_min: str) -> tuple[str, ...]:
    """Every manylinux platform tag a glibc-`libc_min` device of `arch` installs, newest first."""
    major, newest = parse_glibc(libc_min)
    if major != 2:
        raise ValueError(f"libc_min {libc_min!r}: only glibc 2.x has manylinux tags")
    oldest = 5 if arch in _X86 else 17  # manylinux has no older tags for the other architectures
    tags: list[str] = []
    for minor in range(newest, oldest - 1, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        legacy = LEGACY_MANYLINUX.get((2, minor))
        if legacy and _legacy_ok(legacy, arch):
            tags.append(f"{legacy}_{arch}")
    return tuple(tags)
