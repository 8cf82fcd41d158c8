"""Quantize stage: decoders re-run the genai builder at the target precision; encoders quantize the
fp32 optimum export (dynamic per-tensor int8, or fp16)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..toolchains.contract import run_worker
from ..toolchains.manager import Toolchain
from . import model_dir as md
from .export import Progress, build_decoder

__all__ = ["build_decoder", "quantize_encoder"]


def quantize_encoder(
    tc: Toolchain, fp32_dir: Path, out: Path, *, quant: str, on_progress: Progress = None
) -> dict[str, Any]:
    """fp32 model dir -> quantized model dir (same tokenizer and embedding info)."""
    if quant not in ("int8", "fp16"):
        raise UserError(f"encoders are built as fp32, fp16 or int8, not {quant}", hints=["use --quant int8"])
    run_worker(
        tc,
        "optimum_worker.py",
        {
            "op": "quantize_encoder",
            "src": str(fp32_dir / "model.onnx"),
            "dst": str(out / "model.onnx"),
            "quant": quant,
        },
        on_progress=on_progress,
    )
    for name in md.TOKENIZER_FILES:
        if (fp32_dir / name).is_file():
            shutil.copy2(fp32_dir / name, out / name)
    import json

    desc = json.loads((fp32_dir / md.DESCRIPTOR).read_text())
    md.write_descriptor(
        out,
        name=desc["name"],
        task=desc["task"],
        fmt=desc["format"],
        quant=quant,
        context_length=desc["context_length"],
        embedding=desc["embedding"],
    )
    return {"quant": quant}
