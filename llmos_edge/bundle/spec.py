"""What the build hands to the bundler, and what it gets back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from ..spec.models import Golden, Target

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BundleSpec:
    """Everything a bundle is made of; the same spec gives the same image bytes (unless encrypted)."""

    target: Target
    recipe: str
    version: str
    models: Mapping[str, Path]
    golden: tuple[Golden, ...] = ()
    quality_report: Mapping[str, Any] = field(default_factory=dict)
    toolchain_lock: Mapping[str, Any] = field(default_factory=dict)
    source_model_sha256: str = ""
    signing_key: Path | None = None
    wheels: bool = True
    encrypt_for: Path | None = None
    extra_templates: Mapping[str, str] = field(default_factory=dict)
    config_overrides: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def bundle_name(self) -> str:
        return self.name or f"{self.recipe}-{self.target.name}"

    def validate(self) -> None:
        """Names end up in file names and on devices: keep them to a safe alphabet."""
        if not _VERSION_RE.fullmatch(self.version):
            raise UserError(f"bundle version {self.version!r} is not MAJOR.MINOR.PATCH[-tag]",
                            hints=["pass e.g. --version 1.0.0 or 1.2.0-rc1"])
        if not _NAME_RE.fullmatch(self.bundle_name):
            raise UserError(f"bundle name {self.bundle_name!r} may only use letters, digits, '.', '_', '-'")
        if not self.models:
            raise UserError("a bundle needs at least one model directory")
        for key, value in self.config_overrides.items():
            # device_key and host land in the systemd unit / ExecStart line: one line, no control chars
            if isinstance(value, str) and _CONTROL_RE.search(value):
                raise UserError(f"runtime config override {key}={value!r} contains a newline or "
                                "control character", hints=["use a plain one-line value"])
        for model_id, path in self.models.items():
            if not _NAME_RE.fullmatch(model_id):
                raise UserError(f"model id {model_id!r} may only use letters, digits, '.', '_', '-'")
            if not (path / "llmos_model.json").is_file():
                raise UserError(f"{path} is not a model directory (no llmos_model.json)",
                                hints=["pass the output folder of the build's model stages"])


@dataclass(frozen=True)
class BundleResult:
    folder: Path
    image: Path
    manifest: dict[str, Any]
