"""The one table of model formats and their exporters: plan, the stage cache keys, the CLI and the
build all read it, so knowledge about a format lives here and nowhere else.

One entry per (format, task). Pure data: no I/O and no imports of stages or toolchains, so any layer
may read it. tests/build/test_formats.py guards it (every entry has a tiny-model test, every source
file of an exporter is in its stage keys, the backends exist in the runtime's engine registry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from .spec.models import Format, Quant, Task

Stage = Literal["fetch", "prepare", "export", "quantize", "evaluate", "bundle"]
Config = Mapping[str, object]  # a source's config.json (top level)


@dataclass(frozen=True)
class Architecture:
    """A model family an exporter takes: its Hugging Face class and the names configs and GGUFs use."""

    hf_class: str
    model_types: tuple[str, ...]  # config.json model_type and GGUF general.architecture values

    def matches(self, name: str) -> bool:
        return name == self.hf_class or name in self.model_types


@dataclass(frozen=True)
class Misread:
    """A config layout an exporter misreads (measured): refused at plan instead of crashing at export."""

    architecture: str  # HF class
    what: str  # the layout, for the message
    applies: Callable[[Config], bool]
    fix: str


@dataclass(frozen=True)
class Exporter:
    """How one (format, task) is built, and what serves it."""

    format: Format
    task: Task
    toolchain: str  # llmos_edge/toolchains/locks/<toolchain>.txt
    builder: str  # module under llmos_edge/build_model/ that runs the stages
    runtime: str  # the library that serves the model on the device
    backend: str  # the runtime engine ("module:class" in runtime/engines REGISTRY)
    quants: tuple[Quant, ...]
    separate_quantize: bool  # False: the exporter quantizes while converting (no quantize stage)
    context_cap: int | None  # the longest context the exported graph can hold; None: the recipe's
    architectures: tuple[Architecture, ...]
    # stage -> source files (relative to llmos_edge/) whose code makes that stage's output
    stage_code: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    misreads: tuple[Misread, ...] = ()
    host_module: str | None = None  # the build host imports it to evaluate the format (quality gate)
    host_install: str | None = None  # how to get host_module
    description: str = ""

    @property
    def key(self) -> tuple[Format, Task]:
        return (self.format, self.task)

    def stages(self, *, quant: str, gguf_source: bool) -> tuple[Stage, ...]:
        """The stages a build runs, in order (what `plan` lists is what `build` runs)."""
        out: list[Stage] = ["fetch"]
        if gguf_source and "prepare" in self.stage_code:
            out.append("prepare")
        out.append("export")
        if self.separate_quantize and quant != "fp32":
            out.append("quantize")
        return (*out, "evaluate", "bundle")

    def context(self, requested: int) -> int:
        return requested if self.context_cap is None else min(requested, self.context_cap)

    def supports(self, architecture: str) -> Architecture | None:
        return next((a for a in self.architectures if a.matches(architecture)), None)

    def code_files(self, stage: str) -> tuple[str, ...]:
        return self.stage_code.get(stage, ())

    def misread(self, architecture: str, config: Config) -> Misread | None:
        arch = self.supports(architecture)
        return next(
            (m for m in self.misreads if arch and m.architecture == arch.hf_class and m.applies(config)), None
        )


def _arch(hf_class: str, *model_types: str) -> Architecture:
    return Architecture(hf_class, model_types)


# Text decoders onnxruntime-genai 0.18's model builder exports (builder.py create_model; multimodal
# and MoE-only entries left out: the runtime serves text). Gemma 3 and Phi-3 configs are normalized
# for it first (toolchains/workers/genai_config_fix.py): transformers 5 nests Gemma 3's RoPE per
# layer type (the builder raised KeyError 'rope_type'), and a Phi-3 without LongRoPE factors whose
# two context fields differ went down the builder's LongRoPE path (KeyError 'multi_cache').
_GENAI_ARCHS = (
    _arch("LlamaForCausalLM", "llama"),
    _arch("MistralForCausalLM", "mistral"),
    _arch("Qwen2ForCausalLM", "qwen2"),
    _arch("Qwen3ForCausalLM", "qwen3"),
    _arch("Phi3ForCausalLM", "phi3"),
    _arch("PhiForCausalLM", "phi", "phi2"),
    _arch("GemmaForCausalLM", "gemma"),
    _arch("Gemma2ForCausalLM", "gemma2"),
    _arch("Gemma3ForCausalLM", "gemma3_text", "gemma3"),
    _arch("GraniteForCausalLM", "granite"),
    _arch("OlmoForCausalLM", "olmo"),
    _arch("NemotronForCausalLM", "nemotron"),
    _arch("SmolLM3ForCausalLM", "smollm3"),
    _arch("InternLM2ForCausalLM", "internlm2"),
    _arch("Ernie4_5ForCausalLM", "ernie4_5"),
)


# Layouts the builder still misreads after genai_config_fix.normalize (none known today).
_GENAI_MISREADS: tuple[Misread, ...] = ()
# Encoders optimum-onnx exports for feature-extraction and the runtime pools (mean/cls).
_OPTIMUM_ENCODER_ARCHS = (
    _arch("BertModel", "bert"),
    _arch("RobertaModel", "roberta"),
    _arch("XLMRobertaModel", "xlm-roberta"),
    _arch("DistilBertModel", "distilbert"),
    _arch("MPNetModel", "mpnet"),
)
# Decoders litert-torch 0.10's export_hf converts (its generative examples); Llama is verified here.
_LITERT_DECODER_ARCHS = (
    _arch("LlamaForCausalLM", "llama"),
    _arch("Qwen2ForCausalLM", "qwen2"),
    _arch("Qwen3ForCausalLM", "qwen3"),
    _arch("Gemma3ForCausalLM", "gemma3_text", "gemma3"),
    _arch("Phi3ForCausalLM", "phi3"),
)
_LITERT_ENCODER_ARCHS = (_arch("BertModel", "bert"),)

_RUN = "build_model/_run.py"
_CONTRACT = "toolchains/workers/_contract.py"
_ONNX_EXPORT = (
    "build_model/onnx.py",
    _RUN,
    "stages/export.py",
    "stages/model_dir.py",
    "stages/tokenizer_repair.py",
    _CONTRACT,
)
_GENAI = (*_ONNX_EXPORT, "toolchains/workers/genai_worker.py", "toolchains/workers/genai_config_fix.py",
          "stages/probe.py")  # probe: GGUF BOS flags
_OPTIMUM = (*_ONNX_EXPORT, "toolchains/workers/optimum_worker.py")
_ONNX_EVAL = ("build_model/onnx.py", _RUN, "stages/evaluate.py", "stages/model_dir.py")
# The TFLite gate runs the on-device engine itself, so its code is part of the evaluate key.
_TFLITE_ENGINE = (
    "runtime/engine_tflite.py",
    "runtime/engines/base.py",
    "runtime/engines/tokenizer.py",
    "runtime/engines/__init__.py",
    "runtime/descriptor.py",
    "runtime/chat.py",
    "runtime/sampling.py",
    "runtime/errors.py",
    "runtime/crypto.py",
)
_TFLITE_WORKERS = ("toolchains/workers/tflite_export.py", "toolchains/workers/tflite_common.py", _CONTRACT)
_TFLITE_EXPORT = (
    "build_model/tflite.py",
    _RUN,
    "stages/tflite.py",
    "stages/model_dir.py",
    *_TFLITE_WORKERS,
)
_TFLITE_EVAL = (
    "build_model/tflite.py",
    _RUN,
    "stages/tflite.py",
    "stages/evaluate.py",
    "stages/model_dir.py",
    *_TFLITE_WORKERS,
    *_TFLITE_ENGINE,
)
_LITERT_INSTALL = "pip install 'llmos-edge[tflite]'  (or: pip install ai-edge-litert==2.3.0)"

# The KV cache of a TFLite decoder is fixed at export and copied every decode step: 2k would move
# ~94 MB a token. Encoders need a fixed sequence length (dynamic crashed the converter).
TFLITE_DECODER_CONTEXT = 512
TFLITE_ENCODER_SEQ = 256

EXPORTERS: tuple[Exporter, ...] = (
    Exporter(
        format="onnx-genai",
        task="text-generation",
        toolchain="onnx-genai",
        builder="onnx",
        runtime="onnxruntime-genai",
        backend=".genai:GenaiEngine",
        quants=("fp32", "fp16", "int8", "int4"),
        separate_quantize=True,
        context_cap=None,
        architectures=_GENAI_ARCHS,
        stage_code={"prepare": _GENAI, "export": _GENAI, "quantize": _GENAI, "evaluate": _ONNX_EVAL},
        misreads=_GENAI_MISREADS,
        description="onnxruntime-genai model builder (fused GQA graph, MatMulNBits)",
    ),
    Exporter(
        format="onnx",
        task="feature-extraction",
        toolchain="onnx-optimum",
        builder="onnx",
        runtime="onnxruntime",
        backend=".ort_encoder:OrtEncoderEngine",
        quants=("fp32", "fp16", "int8"),
        separate_quantize=True,
        context_cap=None,
        architectures=_OPTIMUM_ENCODER_ARCHS,
        stage_code={
            "export": _OPTIMUM,
            "quantize": (*_OPTIMUM, "stages/quantize.py"),
            "evaluate": _ONNX_EVAL,
        },
        description="optimum-onnx encoder export + onnxruntime dynamic quantization",
    ),
    Exporter(
        format="tflite",
        task="text-generation",
        toolchain="tflite",
        builder="tflite",
        runtime="ai-edge-litert (LiteRT, XNNPACK)",
        backend="..engine_tflite:TFLiteDecoderEngine",
        quants=("fp32", "int8", "int4"),
        separate_quantize=False,
        context_cap=TFLITE_DECODER_CONTEXT,
        architectures=_LITERT_DECODER_ARCHS,
        stage_code={"export": _TFLITE_EXPORT, "evaluate": _TFLITE_EVAL},
        host_module="ai_edge_litert.interpreter",
        host_install=_LITERT_INSTALL,
        description="litert-torch export_hf + ai-edge-quantizer",
    ),
    Exporter(
        format="tflite",
        task="feature-extraction",
        toolchain="tflite",
        builder="tflite",
        runtime="ai-edge-litert (LiteRT, XNNPACK)",
        backend="..engine_tflite:TFLiteEncoderEngine",
        quants=("fp32", "int8"),
        separate_quantize=False,
        context_cap=TFLITE_ENCODER_SEQ,
        architectures=_LITERT_ENCODER_ARCHS,
        stage_code={"export": _TFLITE_EXPORT, "evaluate": _TFLITE_EVAL},
        host_module="ai_edge_litert.interpreter",
        host_install=_LITERT_INSTALL,
        description="litert-torch convert (fixed sequence length, pooling in the graph)",
    ),
)

FORMATS: tuple[Format, ...] = get_args(Format)
QUANTS: tuple[Quant, ...] = get_args(Quant)


def find(fmt: str, task: str) -> Exporter | None:
    return next((e for e in EXPORTERS if e.format == fmt and e.task == task), None)


def for_task(task: str) -> tuple[Exporter, ...]:
    return tuple(e for e in EXPORTERS if e.task == task)


def stage_code_union() -> dict[str, tuple[str, ...]]:
    """stage -> every file any exporter lists for it (a stage key without an exporter uses this)."""
    out: dict[str, set[str]] = {}
    for e in EXPORTERS:
        for stage, files in e.stage_code.items():
            out.setdefault(stage, set()).update(files)
    return {stage: tuple(sorted(files)) for stage, files in sorted(out.items())}


def markdown() -> str:
    """The formats and architectures tables of docs/spec.md (a test keeps the doc equal to this)."""
    lines = [
        "| format | task | toolchain | stages | context cap | quants | runtime |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in EXPORTERS:
        stages = " → ".join(e.stages(quant="int8", gguf_source=True))
        cap = str(e.context_cap) if e.context_cap else "recipe's"
        cells = (e.format, e.task, e.toolchain, stages, cap, ", ".join(e.quants), e.runtime)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| format | task | architecture | config `model_type` / GGUF `general.architecture` |"]
    lines.append("|---|---|---|---|")
    lines += [f"| {f} | {t} | {c} | {m} |" for f, t, c, m in architecture_table()]
    return "\n".join(lines) + "\n"


def architecture_table() -> list[tuple[str, str, str, str]]:
    """(format, task, HF class, model types) rows, for docs/spec.md and `recipes check`."""
    return [
        (e.format, e.task, a.hf_class, ", ".join(a.model_types)) for e in EXPORTERS for a in e.architectures
    ]
