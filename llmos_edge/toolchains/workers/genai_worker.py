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
from genai_config_fix import ConfigLayoutError, normalize


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

    hf_dir, out, cache = req["hf_dir"], req["out_dir"], req["cache_dir"]
    config = json.loads(Path(hf_dir, "config.json").read_text())
    arch = (config.get("architectures") or ["?"])[0]
    progress(f"building {arch} {req['precision']} for {req['execution_provider']}")
    normalized = _run_builder(req, arch)
    shutil.rmtree(cache, ignore_errors=True)
    # only a model that ties its weights may read the embedding from the lm_head
    tie = req.get("tie_int8_embedding") and config.get("tie_word_embeddings", False)
    tied = tie_int8_embedding(Path(out)) if tie else None
    return {
        "architecture": arch,
        "files": sorted(os.listdir(out)),
        "tied_int8_embedding": tied,
        "config_normalized": normalized,
    }


# what the builder raises on a config it misreads or a model it cannot build (never a traceback)
_BUILDER_FAILURES = (KeyError, AttributeError, TypeError, ValueError, IndexError, AssertionError)


def _run_builder(req: dict[str, Any], arch: str) -> list[str]:
    """parse_extra_options, normalize the config it loaded, create_model; failures -> WorkerError."""
    from onnxruntime_genai.models import builder

    hf_dir, out, cache = req["hf_dir"], req["out_dir"], req["cache_dir"]
    precision, provider = req["precision"], req["execution_provider"]
    options = {**sliding_window_options(hf_dir), **req.get("extra_options", {})}
    opts = [f"{k}={v}" for k, v in options.items()]
    try:
        extra = builder.parse_extra_options("", hf_dir, out, precision, provider, cache, opts)
        normalized = normalize(extra["hf_details"]["hf_config"])
        for change in normalized:
            progress(f"config for the builder: {change}")
        builder.create_model("", hf_dir, out, precision, provider, cache, **extra)
    except ConfigLayoutError as exc:
        raise WorkerError("unsupported_architecture", f"onnxruntime-genai's model builder: {exc}") from exc
    except NotImplementedError as exc:
        raise WorkerError(
            "unsupported_architecture",
            f"onnxruntime-genai's model builder cannot export architecture {arch}: {exc}",
        ) from exc
    except _BUILDER_FAILURES as exc:
        raise WorkerError("unsupported_architecture", builder_failure(arch, exc)) from exc
    return normalized


def sliding_window_options(hf_dir: str) -> dict[str, str]:
    """A model with sliding layers (Gemma 3) gets a full-length KV cache on those layers too.

    The builder's default bounded window cache needs the generator's max_length to reach the window
    ("KV cache capacity (14) must be at least local_window_size (16)", measured), and the runtime
    sizes max_length per request (prompt + max_tokens), far below Gemma 3 270M's 512-token window.
    Greedy tokens equal transformers' either way (tests/build/test_misread_configs.py).
    """
    import json

    config = json.loads(Path(hf_dir, "config.json").read_text())
    layer_types = config.get("layer_types") or []
    sliding = isinstance(layer_types, list) and "sliding_attention" in layer_types
    return {"windowed_kv_cache": "false"} if sliding and config.get("sliding_window") else {}


def builder_failure(arch: str, exc: BaseException) -> str:
    """One line naming the architecture, the config field (when known) and where the builder failed."""
    import traceback

    key = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
    if isinstance(key, str) and key.isidentifier():
        what = f"it looked for the config field {key!r} and found none"
    elif isinstance(exc, AttributeError) and getattr(exc, "name", None):
        what = f"it looked for the config field {exc.name!r} and found none"
    else:
        what = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f for f in reversed(frames) if "onnxruntime_genai" in f.filename), None)
    at = f" (at {Path(where.filename).name}:{where.lineno} {where.name})" if where else ""
    return (
        f"onnxruntime-genai's model builder cannot export this {arch} model: {what}{at} "
        "(a config layout or model feature the builder does not support)"
    )


def _embedding_rewrite(graph: Any, gather: Any, lm: Any, block: int, hidden: int) -> list[Any]:
    """Reshape(lm_head Q8 rows) -> GatherBlockQuantized(bits 8) [-> Slice off the block padding]."""
    import numpy as np
    from onnx import helper, numpy_helper

    rows, n_blocks, _ = next(i for i in graph.initializer if i.name == lm.input[1]).dims
    padded, base = n_blocks * block, "/model/embed_tokens"
    consts = {"q8_shape": [rows, padded], "slice_start": [0], "slice_end": [hidden], "slice_axis": [-1]}
    graph.initializer.extend(
        numpy_helper.from_array(np.array(v, dtype=np.int64), f"{base}/{k}") for k, v in consts.items()
    )
    out = gather.output[0]
    gbq_out = out if padded == hidden else f"{base}/GatherBlockQuantized/output_0"
    zero_points = [lm.input[3]] if len(lm.input) > 3 and lm.input[3] else []
    nodes = [
        helper.make_node(
            "Reshape", [lm.input[1], f"{base}/q8_shape"], [f"{base}/q8_rows"], name=f"{base}/Reshape"
        ),
        helper.make_node(
            "GatherBlockQuantized",
            [f"{base}/q8_rows", gather.input[1], lm.input[2], *zero_points],
            [gbq_out],
            name=f"{base}/GatherBlockQuantized",
            domain="com.microsoft",
            bits=8,
            block_size=block,
            gather_axis=0,
            quantize_axis=1,
        ),
    ]
    if padded != hidden:
        ins = [gbq_out, *(f"{base}/slice_{k}" for k in ("start", "end", "axis"))]
        nodes.append(helper.make_node("Slice", ins, [out], name=f"{base}/Slice"))
    return nodes


def tie_int8_embedding(out: Path) -> dict[str, Any] | None:
    """Share the int8 lm_head with the embedding lookup (the builder keeps a second, fp32 copy).

    onnxruntime-genai's builder only ties 4-bit embeddings; onnxruntime's GatherBlockQuantized also
    reads 8-bit MatMulNBits rows, so the fp32 table (113 MB on SmolLM2) can go. Returns None when the
    graph is not a tied int8 one (then it is left as built).
    """
    import onnx
    from onnx import helper

    path = out / "model.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    gather = next((n for n in graph.node if n.name == "/model/embed_tokens/Gather"), None)
    lm = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.name.startswith("/lm_head/")), None)
    table = next((i for i in graph.initializer if gather is not None and i.name == gather.input[0]), None)
    if gather is None or lm is None or table is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in lm.attribute}
    if attrs.get("bits") != 8 or attrs.get("N") != table.dims[0] or attrs.get("K") != table.dims[1]:
        return None
    progress("sharing the int8 lm_head with the embedding (GatherBlockQuantized, 8 bits)")
    nodes = _embedding_rewrite(graph, gather, lm, int(attrs["block_size"]), int(table.dims[1]))
    at = list(graph.node).index(gather)
    graph.node.remove(gather)
    for k, node in enumerate(nodes):
        graph.node.insert(at + k, node)
    graph.initializer.remove(table)
    _save_external(model, out)
    return {
        "bits": 8,
        "block_size": int(attrs["block_size"]),
        "removed_bytes": int(table.dims[0] * table.dims[1] * 4),
    }


def _save_external(model: Any, out: Path) -> None:
    """Write model.onnx + model.onnx.data under temp names, then rename over the builder's files."""
    import onnx

    tmp_data = "model.onnx.data.tmp"
    onnx.save(
        model,
        str(out / "model.onnx.tmp"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=tmp_data,
    )
    # the graph names its data file: rewrite it to the final name, then swap both files in
    final = onnx.load(str(out / "model.onnx.tmp"), load_external_data=False)
    for init in final.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "model.onnx.data"
    onnx.save(final, str(out / "model.onnx.tmp"))
    os.replace(out / tmp_data, out / "model.onnx.data")
    os.replace(out / "model.onnx.tmp", out / "model.onnx")


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


def tiny_decoder(req: dict[str, Any]) -> dict[str, Any]:
    """A tiny random decoder of any transformers model_type (tests), saved as an HF folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(int(req.get("seed", 0)))
    config = AutoConfig.for_model(req["model_type"], **req["config"])
    config.architectures = [req["architecture"]]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(req["out_dir"])
    return {"params": sum(p.numel() for p in model.parameters())}


def hf_greedy(req: dict[str, Any]) -> dict[str, Any]:
    """transformers' greedy continuation of token ids and each step's logits (the reference)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(int(req.get("threads", 1)))
    model = AutoModelForCausalLM.from_pretrained(req["hf_dir"], dtype=torch.float32).eval()
    ids = torch.tensor([req["ids"]], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=int(req["max_new_tokens"]),
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return {
        "ids": out.sequences[0, ids.shape[1] :].tolist(),
        "logits": [step[0].tolist() for step in out.logits],
    }


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
            "tiny_decoder": tiny_decoder,
            "hf_greedy": hf_greedy,
            "hf_tokenize": hf_tokenize,
        }
    )
