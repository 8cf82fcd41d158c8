"""onnx-optimum toolchain worker: encoder export with optimum, dynamic int8 quantization.

Run as: <toolchain python> optimum_worker.py request.json response.json (see _contract.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _contract import WorkerError, progress, serve


def export_encoder(req: dict[str, Any]) -> dict[str, Any]:
    """optimum feature-extraction export -> out_dir/model.onnx (fp32)."""
    import json

    from optimum.exporters.onnx import main_export

    src, out = req["model_dir"], Path(req["out_dir"])
    arch = (json.loads(Path(src, "config.json").read_text()).get("architectures") or ["?"])[0]
    progress(f"exporting {arch} (feature-extraction) with optimum")
    try:
        main_export(src, output=out, task="feature-extraction", device="cpu", do_validation=False)
    except (KeyError, ValueError) as exc:
        if "is not supported" in str(exc) or "Unrecognized configuration" in str(exc):
            raise WorkerError("unsupported_architecture", f"optimum cannot export {arch}: {exc}") from exc
        raise
    return {"architecture": arch, "files": sorted(os.listdir(out))}


def quantize_encoder(req: dict[str, Any]) -> dict[str, Any]:
    """int8: dynamic, per-tensor (per-channel signed int8 gives garbage on onnxruntime 1.32); fp16: cast."""
    src, dst, quant = Path(req["src"]), Path(req["dst"]), req["quant"]
    progress(f"quantizing {src.name} to {quant}")
    if quant == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=False)
    elif quant == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    else:
        raise WorkerError("bad_input", f"encoders are offered as fp32, fp16 or int8, not {quant}")
    return {"size": dst.stat().st_size}


def tiny_bert(req: dict[str, Any]) -> dict[str, Any]:
    """A tiny random BERT (tests), saved as an HF folder."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(int(req.get("seed", 0)))
    model = BertModel(BertConfig(**req["config"]))
    model.save_pretrained(req["out_dir"])
    shutil.rmtree(Path(req["out_dir"]) / "__pycache__", ignore_errors=True)
    return {"params": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    serve({"export_encoder": export_encoder, "quantize_encoder": quantize_encoder, "tiny_bert": tiny_bert})
