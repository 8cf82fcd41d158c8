"""onnx-genai toolchain worker: GGUF -> HF folder, decoder export with onnxruntime-genai's builder.

Run as: <toolchain python> genai_worker.py request.json response.json (see _contract.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _contract import WorkerError, progress, serve


def gguf_to_hf(req: dict[str, Any]) -> dict[str, Any]:
    """Dequantize a GGUF into an fp32 HF folder (tokenizer saved as transformers derives it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(req["gguf_path"])
    out = Path(req["out_dir"])
    progress(f"loading {gguf.name} with transformers (dequantizing)")
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as exc:
        raise WorkerError("bad_input", f"transformers cannot load {gguf.name}: {exc}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # transformers 5 refuses to save a GGUF-loaded model: rebuild from config and copy weights
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    progress("saving HF folder")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {
        "architecture": (config.architectures or ["?"])[0],
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
    }


def export_decoder(req: dict[str, Any]) -> dict[str, Any]:
    """Run the model builder: fused GQA graph + MatMulNBits weights + genai_config.json."""
    import json

    from onnxruntime_genai.models import builder

    hf_dir, out, cache = req["hf_dir"], req["out_dir"], req["cache_dir"]
    arch = (json.loads(Path(hf_dir, "config.json").read_text()).get("architectures") or ["?"])[0]
    opts = [f"{k}={v}" for k, v in req.get("extra_options", {}).items()]
    progress(f"building {arch} {req['precision']} for {req['execution_provider']}")
    try:
        extra = builder.parse_extra_options(
            "", hf_dir, out, req["precision"], req["execution_provider"], cache, opts
        )
        builder.create_model("", hf_dir, out, req["precision"], req["execution_provider"], cache, **extra)
    except NotImplementedError as exc:
        raise WorkerError(
            "unsupported_architecture",
            f"onnxruntime-genai's model builder cannot export architecture {arch}: {exc}",
        ) from exc
    shutil.rmtree(cache, ignore_errors=True)
    return {"architecture": arch, "files": sorted(os.listdir(out))}


def tiny_llama(req: dict[str, Any]) -> dict[str, Any]:
    """A tiny random decoder (tests): LlamaConfig from the request, saved as an HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(int(req.get("seed", 0)))
    config = LlamaConfig(**req["config"])
    config.architectures = [req.get("architecture", "LlamaForCausalLM")]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(req["out_dir"])
    return {"params": sum(p.numel() for p in model.parameters())}


def hf_tokenize(req: dict[str, Any]) -> dict[str, Any]:
    """Token ids as transformers computes them (used to check the tokenizer repair)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(req["hf_dir"])
    return {"ids": [tok.encode(t, add_special_tokens=False) for t in req["texts"]]}


if __name__ == "__main__":
    serve(
        {
            "gguf_to_hf": gguf_to_hf,
            "export_decoder": export_decoder,
            "tiny_llama": tiny_llama,
            "hf_tokenize": hf_tokenize,
        }
    )
