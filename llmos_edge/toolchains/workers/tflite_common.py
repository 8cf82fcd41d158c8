"""Shared helpers for the tflite workers (run inside the `tflite` toolchain, never import llmos_edge).

Holds the JSON contract plumbing, the tensorflow-schema shim litert-torch needs, quantization
recipes and the GGUF -> Hugging Face folder conversion.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONTRACT = 1


class WorkerError(Exception):
    """A failure with a contract error kind (bad_input, unsupported_architecture, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def progress(msg: str) -> None:
    print(f"@progress {msg}", flush=True)


def serve(ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """argv: request.json response.json; dispatch on request['op'] and always write a response."""
    req_path, resp_path = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        req = json.loads(req_path.read_text())
        if req.get("contract") != CONTRACT:
            raise WorkerError("bad_input", f"contract {req.get('contract')} not supported (want {CONTRACT})")
        op = ops.get(req.get("op", ""))
        if op is None:
            raise WorkerError("bad_input", f"unknown op {req.get('op')!r}; known: {sorted(ops)}")
        resp: dict[str, Any] = {"contract": CONTRACT, "ok": True, **op(req)}
    except WorkerError as exc:
        resp = {"contract": CONTRACT, "ok": False, "error": {"kind": exc.kind, "message": str(exc)}}
    except MemoryError:
        resp = {
            "contract": CONTRACT,
            "ok": False,
            "error": {"kind": "out_of_memory", "message": "the export ran out of memory"},
        }
    except Exception as exc:
        traceback.print_exc()
        resp = {
            "contract": CONTRACT,
            "ok": False,
            "error": {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"},
        }
    tmp = resp_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(resp))
    tmp.replace(resp_path)


def install_tf_schema_shim() -> str:
    """litert-torch imports tensorflow.lite.python.schema_py_generated without declaring tensorflow.

    ai_edge_litert ships the same flatbuffer schema module, so map the import onto it instead of
    installing tensorflow (~600 MB). Returns which one is used, for the build report.
    """
    if "tensorflow" in sys.modules:
        return "tensorflow"
    try:
        import tensorflow  # noqa: F401

        return "tensorflow"
    except ImportError:
        pass
    from ai_edge_litert import schema_py_generated

    names = ("tensorflow", "tensorflow.lite", "tensorflow.lite.python")
    for name in names:
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        mod.__path__ = []
        sys.modules[name] = mod
    sys.modules["tensorflow"].lite = sys.modules["tensorflow.lite"]  # type: ignore[attr-defined]
    sys.modules["tensorflow.lite"].python = sys.modules["tensorflow.lite.python"]  # type: ignore[attr-defined]
    sys.modules["tensorflow.lite.python"].schema_py_generated = schema_py_generated  # type: ignore[attr-defined]
    sys.modules["tensorflow.lite.python.schema_py_generated"] = schema_py_generated
    return "ai_edge_litert shim"


def quant_recipe(quant: str, work: Path) -> str | None:
    """Our quant name -> an ai-edge-quantizer recipe (a name it knows, or a JSON file we write)."""
    if quant == "fp32":
        return None
    if quant == "int8":
        return "dynamic_wi8_afp32"
    if quant == "int4":  # experimental: weight-only int4 in blocks of 32 (dynamic int4 blocks crash XNNPACK)
        from ai_edge_quantizer import qtyping, recipe_manager

        rm = recipe_manager.RecipeManager()
        rm.add_weight_only_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            num_bits=4,
            granularity=qtyping.QuantGranularity.BLOCKWISE_32,
        )
        path = work / "recipe_wi4_b32.json"
        path.write_text(json.dumps(rm.get_quantization_recipe()))
        return str(path)
    if quant == "int8-static":
        return "static_wi8_ai8"
    raise WorkerError("bad_input", f"quant {quant!r} is not offered for tflite (fp32, int8, int4)")


def quantize_file(src: Path, dst: Path, recipe: str | None, calibration: Any = None) -> None:
    """Quantize a .tflite with ai-edge-quantizer (copy when no recipe)."""
    import shutil

    if recipe is None:
        shutil.copyfile(src, dst)
        return
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer import recipe as recipe_lib

    qt = quantizer.Quantizer(str(src))
    qt.load_quantization_recipe(recipe if recipe.endswith(".json") else getattr(recipe_lib, recipe)())
    result = qt.quantize(qt.calibrate(calibration)) if calibration is not None else qt.quantize()
    result.export_model(str(dst), overwrite=True)


def gguf_to_hf(gguf: Path, out: Path) -> Path:
    """Load a GGUF with transformers and save a plain HF folder litert-torch can read.

    transformers 5 refuses save_pretrained on GGUF-loaded models, so rebuild from the config
    (without quantization_config) and copy the weights; then repair the GGUF-derived tokenizer.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    progress(f"loading {gguf.name} (dequantizing GGUF)")
    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
    model.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tok.save_pretrained(out)
    repair_tokenizer(out)
    return out


def repair_tokenizer(folder: Path) -> None:
    """Make the GGUF-derived tokenizer clean: ByteLevel decode, no auto-BOS, eos <|im_end|>."""
    tj_path, tc_path = folder / "tokenizer.json", folder / "tokenizer_config.json"
    tj = json.loads(tj_path.read_text())
    vocab = tj.get("model", {}).get("vocab", {})
    if "<|im_end|>" not in vocab:
        return
    tj["normalizer"] = None
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    tj["post_processor"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": False,
        "use_regex": True,
    }
    tj_path.write_text(json.dumps(tj, ensure_ascii=False))
    tc = json.loads(tc_path.read_text()) if tc_path.exists() else {}
    tc.update({"eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "add_bos_token": False})
    tc_path.write_text(json.dumps(tc, ensure_ascii=False, indent=2))
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        cfg["eos_token_id"] = vocab["<|im_end|>"]
        cfg_path.write_text(json.dumps(cfg, indent=2))
