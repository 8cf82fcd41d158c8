"""Tiny real models for tests and benches, built once through the real toolchains and cached.

Each model dir is cached under cache_root()/test-models/<name>-<hash of this file, its toolchain's lock
and that toolchain's exporter code>, so reruns are instant, a changed exporter or fixture recipe
rebuilds it, and a change to another toolchain's code does not. The dirs are SHARED:
copy one (shutil.copytree) before modifying it in a test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from llmos_edge.fsutil import atomic_dir, file_lock
from llmos_edge.paths import cache_root
from llmos_edge.toolchains import manager
from llmos_edge.toolchains.contract import WORKERS_DIR

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome. Water boils at 100 degrees.",
    "Edge devices run small language models. A Raspberry Pi has four cores and a few GB of memory.",
    "Quantization stores weights in fewer bits; int4 block-wise keeps one scale per 32 weights.",
    "What is the capital of France? Paris is the capital and largest city of France.",
] * 20
TINY_LLAMA: dict[str, int | float | bool] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "rms_norm_eps": 1e-5,
}
TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
_STAGES = Path(manager.__file__).parent.parent / "stages"
# What each toolchain's fixtures are made by. A fixture is keyed on its own toolchain's lock and code
# only, so an edit to another exporter (or anywhere else) keeps it cached; this file is the fixtures'
# recipe and counts for all of them.
_CODE_FILES = {
    "onnx-genai": [WORKERS_DIR / "genai_worker.py", _STAGES / "export.py", _STAGES / "model_dir.py"],
    "onnx-optimum": [WORKERS_DIR / "optimum_worker.py", _STAGES / "export.py", _STAGES / "quantize.py",
                     _STAGES / "model_dir.py"],
    "tflite": [WORKERS_DIR / "tflite_export.py", WORKERS_DIR / "tflite_common.py", _STAGES / "tflite.py",
               _STAGES / "model_dir.py"],
}


def _fixture_hash(toolchain: str) -> str:
    h = hashlib.sha256(manager.resolve(toolchain).lock_hash.encode())
    for f in [Path(__file__), WORKERS_DIR / "_contract.py", *_CODE_FILES[toolchain]]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def cached_export(name: str, toolchain: str, build: Callable[[Path], None]) -> Path:
    """Build into a temp dir and publish atomically; concurrent test sessions wait on a file lock.

    The folder is cache_root()/test-models/<name>-<_fixture_hash(toolchain)>; `build` must write
    llmos_model.json (the completion marker).
    """
    final = cache_root() / "test-models" / f"{name}-{_fixture_hash(toolchain)}"
    if (final / "llmos_model.json").is_file():
        return final
    with file_lock(final.with_name(final.name + ".lock")):
        if not (final / "llmos_model.json").is_file():
            with atomic_dir(final) as tmp:
                build(tmp)
    return final


def write_tiny_bpe(out: Path) -> None:
    """A real ByteLevel BPE (512 tokens) with ChatML specials, trained with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=int(TINY_LLAMA["vocab_size"]),
        show_progress=False,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "add_bos_token": False,
        "add_prefix_space": False,
        "model_max_length": 2048,
        "chat_template": CHATML,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def write_tiny_wordpiece(out: Path) -> None:
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(CORPUS, vocab_size=300, show_progress=False)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "model_max_length": 128,
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def make_tiny_llama_hf(out: Path, *, architecture: str = "LlamaForCausalLM", seed: int = 0) -> Path:
    """A random 2-layer hidden-64 Llama as an HF folder with the tiny BPE tokenizer."""
    tc = manager.ensure("onnx-genai", progress=False)
    from llmos_edge.toolchains.contract import run_worker

    run_worker(
        tc,
        "genai_worker.py",
        {
            "op": "tiny_llama",
            "out_dir": str(out),
            "config": TINY_LLAMA,
            "architecture": architecture,
            "seed": seed,
        },
    )
    write_tiny_bpe(out)
    return out


def make_tiny_bert_hf(out: Path, *, seed: int = 0) -> Path:
    tc = manager.ensure("onnx-optimum", progress=False)
    from llmos_edge.toolchains.contract import run_worker

    write_tiny_wordpiece(out)
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    run_worker(
        tc,
        "optimum_worker.py",
        {
            "op": "tiny_bert",
            "out_dir": str(out),
            "seed": seed,
            "config": {**TINY_BERT, "vocab_size": len(vocab)},
        },
    )
    return out


def tiny_llama_hf_dir() -> Path:
    """Cached tiny HF decoder folder (input of export tests)."""

    def build(tmp: Path) -> None:
        make_tiny_llama_hf(tmp)
        (tmp / "llmos_model.json").write_text("{}")  # completion marker for cached_export

    return cached_export("tiny-llama-hf", "onnx-genai", build)


def tiny_decoder_dir(quant: str = "int4") -> Path:
    """Tiny onnx-genai model dir (builder output + llmos_model.json + tokenizer)."""
    from llmos_edge.stages.export import build_decoder

    hf = tiny_llama_hf_dir()

    def build(tmp: Path) -> None:
        build_decoder(
            manager.ensure("onnx-genai", progress=False),
            hf,
            tmp,
            name="tiny-llama",
            quant=quant,
            context_length=2048,
        )

    return cached_export(f"tiny-decoder-{quant}", "onnx-genai", build)


def tiny_bert_hf_dir() -> Path:
    def build(tmp: Path) -> None:
        make_tiny_bert_hf(tmp)
        (tmp / "llmos_model.json").write_text("{}")

    return cached_export("tiny-bert-hf", "onnx-optimum", build)


def tiny_encoder_dir(quant: str = "fp32") -> Path:
    """Tiny onnx feature-extraction model dir (optimum export [+ int8])."""
    from llmos_edge.stages.export import export_encoder
    from llmos_edge.stages.quantize import quantize_encoder

    hf = tiny_bert_hf_dir()
    tc = manager.ensure("onnx-optimum", progress=False)

    def build(tmp: Path) -> None:
        if quant == "fp32":
            export_encoder(tc, hf, tmp, name="tiny-bert", context_length=128)
        else:
            quantize_encoder(tc, tiny_encoder_dir("fp32"), tmp, quant=quant)

    return cached_export(f"tiny-encoder-{quant}", "onnx-optimum", build)


def smollm2_int4_dir() -> Path:
    """The real SmolLM2 int4 build for the host target (slow the first time; stage-cached after)."""
    from llmos_edge.build_model import build_model
    from llmos_edge.plan import make_plan
    from llmos_edge.spec import load_recipe, load_target

    plan = make_plan(load_target("host"), load_recipe("smollm2-135m-instruct"), quant="int4")
    return build_model(plan, progress=False).model_dir


def copy_model(src: Path, dst: Path) -> Path:
    """A private copy of a shared fixture dir, for tests that modify it."""
    shutil.copytree(src, dst)
    return dst
