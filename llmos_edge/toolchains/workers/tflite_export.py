"""Worker: PyTorch/HF -> TFLite with litert-torch, then ai-edge-quantizer (runs in the tflite toolchain).

Ops: export_decoder, export_encoder, reference (torch fp32 logits/embeddings for the quality gate).
Request/response follow llmos_edge/toolchains/contract.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tflite_common import (
    WorkerError,
    gguf_to_hf,
    install_tf_schema_shim,
    progress,
    quant_recipe,
    quantize_file,
    serve,
)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def _hf_dir(source: str, work: Path) -> Path:
    """A Hugging Face folder for `source` (a folder, or a .gguf converted once into `work`)."""
    src = Path(source)
    if not src.exists():
        raise WorkerError("bad_input", f"model source {src} does not exist")
    if src.suffix == ".gguf":
        return gguf_to_hf(src, work / "hf")
    if not (src / "config.json").is_file():
        raise WorkerError("bad_input", f"{src} has no config.json (want a Hugging Face folder or .gguf)")
    return src


def _check_causal_lm(hf: Path) -> Any:
    """Refuse early, with the architecture named, what litert-torch's LLM exporter cannot take."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    cfg = AutoConfig.from_pretrained(hf)
    if cfg.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise WorkerError(
            "unsupported_architecture",
            f"architecture {cfg.model_type!r} is not a causal language model; litert-torch's "
            "generative export cannot convert it to a text-generation TFLite model",
        )
    return cfg


def export_decoder(req: dict[str, Any]) -> dict[str, Any]:
    """Generative export: prefill_N/decode signatures with an explicit KV cache, then quantize."""
    out = Path(req["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    quant, cache_len = req.get("quant", "int8"), int(req.get("cache_length", 256))
    prefill = [int(n) for n in req.get("prefill_lengths", [32])]
    with tempfile.TemporaryDirectory(prefix="tflite-export-", dir=req.get("work_dir")) as tmp:
        work = Path(tmp)
        hf = _hf_dir(req["source"], work)
        cfg = _check_causal_lm(hf)
        recipe = quant_recipe(quant, work)
        schema = install_tf_schema_shim()
        progress(f"litert-torch export ({cfg.model_type}, cache {cache_len}, prefill {prefill})")
        from litert_torch.generative.export_hf import export as export_hf

        try:
            export_hf.export(
                str(hf),
                str(work / "exp"),
                prefill_lengths=prefill,
                cache_length=cache_len,
                quantization_recipe=None,
                bundle_litert_lm=False,
            )
        except Exception as exc:
            raise WorkerError(
                "unsupported_architecture",
                f"litert-torch could not convert architecture {cfg.model_type!r}: "
                f"{type(exc).__name__}: {str(exc)[:400]}",
            ) from exc
        float_model = _find_tflite(work / "exp")
        progress(f"quantizing ({quant})")
        quantize_file(float_model, out / "model.tflite", recipe)
        for name in TOKENIZER_FILES:
            if (hf / name).exists():
                shutil.copyfile(hf / name, out / name)
        gen = _generation_info(hf, cfg)
    return {
        "num_layers": int(cfg.num_hidden_layers),
        "cache_length": cache_len,
        "prefill_lengths": prefill,
        "tf_schema": schema,
        "recipe": recipe and Path(recipe).name,
        **gen,
    }


def _find_tflite(folder: Path) -> Path:
    found = sorted(p for p in folder.rglob("*.tflite") if "quantized" not in p.name)
    if not found:
        raise WorkerError("internal", f"litert-torch wrote no .tflite under {folder}")
    return max(found, key=lambda p: p.stat().st_size)


def _generation_info(hf: Path, cfg: Any) -> dict[str, Any]:
    """eos ids and chat template for llmos_model.json."""
    tc_path = hf / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text()) if tc_path.exists() else {}
    template = tc.get("chat_template")
    if template is None and (hf / "chat_template.jinja").exists():
        template = (hf / "chat_template.jinja").read_text()
    eos = cfg.eos_token_id
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    return {"eos_token_ids": eos_ids, "chat_template": template}


def export_encoder(req: dict[str, Any]) -> dict[str, Any]:
    """Fixed-length encoder export with mean pooling (+L2 normalize) inside the graph."""
    import torch

    out = Path(req["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    seq_len, quant = int(req.get("seq_len", 128)), req.get("quant", "int8")
    hf = _hf_dir(req["source"], out)
    with tempfile.TemporaryDirectory(prefix="tflite-enc-", dir=req.get("work_dir")) as tmp:
        work = Path(tmp)
        recipe = quant_recipe(quant, work)
        install_tf_schema_shim()
        import litert_torch

        module = _encoder_wrapper(hf, bool(req.get("normalize", True)))
        sample = (torch.zeros((1, seq_len), dtype=torch.int32), torch.ones((1, seq_len), dtype=torch.int32))
        progress(f"litert-torch convert (encoder, seq_len {seq_len})")
        try:
            edge = litert_torch.convert(module, sample)
        except Exception as exc:
            raise WorkerError(
                "unsupported_architecture",
                f"litert-torch could not convert this encoder: {type(exc).__name__}: {str(exc)[:400]}",
            ) from exc
        edge.export(str(work / "float.tflite"))
        progress(f"quantizing ({quant})")
        calib = _calibration(hf, work / "float.tflite", seq_len, req.get("calibration_texts") or [])
        quantize_file(work / "float.tflite", out / "model.tflite", recipe, calib)
    for name in TOKENIZER_FILES:
        if (hf / name).exists() and hf != out:
            shutil.copyfile(hf / name, out / name)
    return {"seq_len": seq_len, "dim": int(module.dim), "recipe": recipe and Path(recipe).name}


def _calibration(hf: Path, model: Path, seq_len: int, texts: list[str]) -> dict[str, Any] | None:
    """Full-integer (static) int8 needs activation ranges: run the float graph's signature on texts."""
    if not texts:
        return None
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf)
    sig, spec = next(iter(Interpreter(model_path=str(model)).get_signature_list().items()))
    ids_name, mask_name = spec["inputs"][:2]
    rows = []
    for text in texts:
        enc = tok(text, truncation=True, max_length=seq_len, padding="max_length")
        rows.append(
            {
                ids_name: np.asarray([enc["input_ids"]], dtype=np.int32),
                mask_name: np.asarray([enc["attention_mask"]], dtype=np.int32),
            }
        )
    return {sig: rows}


def _encoder_wrapper(hf: Path, normalize: bool) -> Any:
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        """input_ids, attention_mask (int32, fixed length) -> mean-pooled [1, dim] embedding."""

        def __init__(self) -> None:
            super().__init__()
            self.model = AutoModel.from_pretrained(hf, dtype=torch.float32).eval()
            self.dim = self.model.config.hidden_size

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids.long(), attention_mask=attention_mask.long())[0]
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled

    return Pooled().eval()


def reference(req: dict[str, Any]) -> dict[str, Any]:
    """Torch fp32 outputs to compare the TFLite model against (saved as .npy files)."""
    import numpy as np
    import torch

    with tempfile.TemporaryDirectory(prefix="tflite-ref-", dir=req.get("work_dir")) as tmp:
        hf = _hf_dir(req["source"], Path(tmp))
        if req["kind"] == "decoder":
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
            ids = torch.tensor([req["token_ids"]], dtype=torch.long)
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0].float().numpy()
            np.save(req["npy_out"], logits)
            return {"shape": list(logits.shape)}
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(hf)
        module = _encoder_wrapper(hf, bool(req.get("normalize", True)))
        rows, limit = [], min(512, int(module.model.config.max_position_embeddings))
        for text in req["texts"]:
            enc = tok(text, return_tensors="pt", truncation=True, max_length=limit)
            with torch.no_grad():
                rows.append(module(enc["input_ids"], enc["attention_mask"])[0].numpy())
        np.save(req["npy_out"], np.stack(rows))
        return {"shape": [len(rows), int(module.dim)]}


if __name__ == "__main__":
    serve({"export_decoder": export_decoder, "export_encoder": export_encoder, "reference": reference})
