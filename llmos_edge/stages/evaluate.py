"""Quality gate: score the shipped model against its own fp32 reference, in the core env.

Runs with onnxruntime / onnxruntime-genai / tokenizers (what ships), never torch: what is gated is
what the device runs. Decoders: perplexity on the recipe's evaluation text (reference and candidate
computed identically) and greedy golden prompts through the chat template. Encoders: cosine to fp32.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckFailed
from . import model_dir as md

_WINDOW = 512
# A reference whose perplexity is above vocab/4 is within a factor 4 of uniform guessing (ppl = vocab):
# an untrained or broken model, never a trained LM on real text (SmolLM2: 14.9 of 49152).
UNTRAINED_FRACTION = 0.25


@dataclass
class GoldenResult:
    prompt: str
    expect_contains: list[str]
    answer: str
    contains_expected: bool
    stopped_at_end_of_turn: bool
    tokens: int
    reference_answer: str | None = None
    needs_end_of_turn: bool = True  # chat mode; a completion-mode (base) model just continues the text

    @property
    def passed(self) -> bool:
        return self.contains_expected and (self.stopped_at_end_of_turn or not self.needs_end_of_turn)


@dataclass
class QualityReport:
    task: str
    quant: str
    reference: str  # what the fp32 reference is
    limits: dict[str, Any]
    perplexity: float | None = None
    reference_perplexity: float | None = None
    eval_tokens: int = 0
    cosine_min: float | None = None
    cosine_mean: float | None = None
    golden: list[GoldenResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    vocab_size: int | None = None
    bos_prepended: bool = False  # the tokenizer's convention: the evaluated sequence starts with BOS
    gate: str = "on"  # "off (--no-gate)" when the build was told not to enforce it

    @property
    def reference_untrained(self) -> bool:
        """A reference near uniform guessing (ppl ~ vocabulary size) proves nothing about the build."""
        ref, vocab = self.reference_perplexity, self.vocab_size
        return ref is not None and bool(vocab) and ref > UNTRAINED_FRACTION * float(vocab or 0)

    @property
    def perplexity_ratio(self) -> float | None:
        if self.perplexity is None or not self.reference_perplexity:
            return None
        return self.perplexity / self.reference_perplexity

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["perplexity_ratio"] = self.perplexity_ratio
        d["passed"] = self.passed
        d["reference_untrained"] = self.reference_untrained
        d["verdict"] = self.verdict
        for g, obj in zip(d["golden"], self.golden, strict=True):
            g["passed"] = obj.passed
        return d

    @property
    def verdict(self) -> str:
        """One line for reports: passed, failed (and why the reference cannot vouch), or not enforced."""
        if self.reference_untrained:
            head = (
                f"reference untrained or broken: its perplexity {self.reference_perplexity:.1f} is near "
                f"the vocabulary size {self.vocab_size} (uniform guessing), so the ratio proves nothing"
            )
        else:
            head = "passed" if self.passed else f"failed ({len(self.failures)})"
        return head if self.gate == "on" else f"{head}; gate {self.gate}"

    def table(self) -> str:
        """The text table shown when the gate fails (and in verbose build output)."""
        rows = [("check", "value", "limit", "result")]
        lim = self.limits
        if self.perplexity is not None:
            rows.append(
                (
                    "perplexity",
                    f"{self.perplexity:.3f}",
                    _fmt(lim.get("max_perplexity")),
                    _ok(lim.get("max_perplexity") is None or self.perplexity <= lim["max_perplexity"]),
                )
            )
            ratio = self.perplexity_ratio
            rows.append(
                (
                    "ppl / fp32 ref",
                    f"{ratio:.3f} (ref {self.reference_perplexity:.3f})" if ratio else "-",
                    _fmt(lim.get("max_perplexity_ratio")),
                    _ok(
                        lim.get("max_perplexity_ratio") is None or (ratio or 0) <= lim["max_perplexity_ratio"]
                    ),
                )
            )
        if self.reference_untrained:
            rows.append(
                (
                    "fp32 ref trained?",
                    f"ppl {self.reference_perplexity:.1f} of vocab {self.vocab_size}",
                    f"< {UNTRAINED_FRACTION} x vocab",
                    "FAIL",
                )
            )
        if self.cosine_min is not None:
            rows.append(
                (
                    "cosine to fp32 (min)",
                    f"{self.cosine_min:.4f}",
                    _fmt(lim.get("min_cosine")),
                    _ok(lim.get("min_cosine") is None or self.cosine_min >= lim["min_cosine"]),
                )
            )
        for g in self.golden:
            rows.append(
                (
                    f"golden: {g.prompt[:40]}",
                    f"{g.answer[:50]!r}"
                    + ("" if g.stopped_at_end_of_turn or not g.needs_end_of_turn else " [no end-of-turn]"),
                    "contains " + ", ".join(g.expect_contains),
                    _ok(g.passed),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([f"quality gate ({self.quant} vs {self.reference}):", *lines])


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def _ok(b: bool) -> str:
    return "ok" if b else "FAIL"


# ---------------------------------------------------------------- decoders
def _session(model_dir: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])


def _empty_past(inp: Any, head_size: int) -> np.ndarray:
    """[batch=1, kv_heads, past=0, head_size]; symbolic dims come from genai_config."""
    dtype = np.float16 if "float16" in inp.type else np.float32
    shape = [1, inp.shape[1], 0, inp.shape[3] if isinstance(inp.shape[3], int) else head_size]
    return np.zeros(shape, dtype=dtype)


def decoder_nll(model_dir: Path, ids: Sequence[int], window: int = _WINDOW) -> tuple[float, int]:
    """Summed negative log-likelihood of ids[1:] (windows of `window` tokens, no KV reuse) and count."""
    sess = _session(model_dir)
    inputs = sess.get_inputs()
    head_size = int(
        json.loads((model_dir / "genai_config.json").read_text())["model"]["decoder"]["head_size"]
    )
    total, count = 0.0, 0
    for start in range(0, max(len(ids) - 1, 1), window):
        chunk = np.asarray(ids[start : start + window + 1], dtype=np.int64)[None, :]
        if chunk.shape[1] < 2:
            break
        feed: dict[str, np.ndarray] = {}
        for inp in inputs:
            if inp.name == "input_ids":
                feed[inp.name] = chunk
            elif inp.name == "attention_mask":
                feed[inp.name] = np.ones_like(chunk)
            elif inp.name == "position_ids":
                feed[inp.name] = np.arange(chunk.shape[1], dtype=np.int64)[None, :]
            elif inp.name.startswith("past_key_values"):
                feed[inp.name] = _empty_past(inp, head_size)
        logits = sess.run(["logits"], feed)[0][0].astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        targets = chunk[0, 1:]
        total -= float(logp[np.arange(len(targets)), targets].sum())
        count += len(targets)
    return total, count


def eval_ids(model_dir: Path, text: str) -> list[int]:
    """The evaluated sequence: the text's tokens framed by the BOS/EOS the tokenizer adds
    (model_dir.special_framing: tokenizer_config add_bos_token/add_eos_token, else the post-processor).
    Gemma 3 without its BOS scores 58.9 instead of 14.8."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    bos, eos = md.special_framing(model_dir)
    ids = list(tok.encode(text, add_special_tokens=False).ids)
    return ([bos] if bos is not None else []) + ids + ([eos] if eos is not None else [])


def vocab_size(model_dir: Path) -> int | None:
    try:
        return int(json.loads((model_dir / "genai_config.json").read_text())["model"]["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def perplexity(model_dir: Path, text: str) -> tuple[float, int]:
    nll, n = decoder_nll(model_dir, eval_ids(model_dir, text))
    return float(np.exp(nll / max(n, 1))), n


def render_chat(template: str, prompt: str, system: str | None) -> str:
    """Render the model's chat template in a sandbox (templates are data, never code)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token="", eos_token=""
    )


def _chat_mode(model_dir: Path) -> bool:
    desc = json.loads((model_dir / md.DESCRIPTOR).read_text())
    return bool(desc.get("prompt_format", "chat" if desc.get("chat_template") else "completion") == "chat")


def framed_prompt(desc: dict[str, Any], prompt: str, system: str | None) -> str:
    """As the runtime frames it: the chat template in chat mode; the raw text in completion mode."""
    chat = desc.get("prompt_format", "chat" if desc.get("chat_template") else "completion") == "chat"
    if chat and desc.get("chat_template"):
        return render_chat(desc["chat_template"], prompt, system)
    return f"{system}\n\n{prompt}" if system else prompt


def generate(
    model_dir: Path, prompt: str, *, max_tokens: int, system: str | None = None
) -> tuple[str, bool, int]:
    """Greedy answer through onnxruntime-genai: (text, stopped_at_end_of_turn, tokens)."""
    import onnxruntime_genai as og

    desc = json.loads((model_dir / md.DESCRIPTOR).read_text())
    text = framed_prompt(desc, prompt, system)
    model = og.Model(str(model_dir))
    tok = og.Tokenizer(model)
    ids = tok.encode(text)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + max_tokens)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    out: list[int] = []
    while not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    eos = set(desc.get("eos_token_ids") or [])
    stopped = bool(out) and out[-1] in eos
    answer = tok.decode(np.asarray([t for t in out if t not in eos], dtype=np.int32))
    return str(answer), stopped, len(out)


def evaluate_decoder(
    model_dir: Path,
    reference_dir: Path,
    *,
    quant: str,
    evaluation_text: str,
    golden: Sequence[Any],
    limits: dict[str, Any],
    reference: str,
) -> QualityReport:
    rep = QualityReport(task="text-generation", quant=quant, reference=reference, limits=limits)
    if evaluation_text.strip():
        rep.vocab_size = vocab_size(model_dir)
        rep.bos_prepended = md.special_framing(model_dir)[0] is not None
        rep.perplexity, rep.eval_tokens = perplexity(model_dir, evaluation_text)
        rep.reference_perplexity = (
            rep.perplexity if reference_dir == model_dir else perplexity(reference_dir, evaluation_text)[0]
        )
    chat_mode = _chat_mode(model_dir)
    for g in golden:
        answer, stopped, n = generate(model_dir, g.prompt, max_tokens=g.max_tokens, system=g.system)
        ref_answer = (
            None
            if reference_dir == model_dir
            else generate(reference_dir, g.prompt, max_tokens=g.max_tokens, system=g.system)[0]
        )
        hit = all(e.lower() in answer.lower() for e in g.expect_contains)
        rep.golden.append(
            GoldenResult(g.prompt, list(g.expect_contains), answer, hit, stopped, n, ref_answer, chat_mode)
        )
    rep.failures = _failures(rep)
    return rep


# ---------------------------------------------------------------- encoders
def embed(model_dir: Path, texts: Sequence[str]) -> np.ndarray:
    """Pooled (and normalized, per llmos_model.json) sentence embeddings with plain onnxruntime."""
    from tokenizers import Tokenizer

    emb = json.loads((model_dir / md.DESCRIPTOR).read_text())["embedding"]
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(int(emb["max_length"]))
    tok.enable_padding()
    enc = tok.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in enc], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
    sess = _session(model_dir)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    names = {i.name for i in sess.get_inputs()}
    hidden = sess.run(None, {k: v for k, v in feed.items() if k in names})[0].astype(np.float64)
    if emb["pooling"] == "cls":
        pooled = hidden[:, 0]
    elif emb["pooling"] == "max":
        pooled = np.where(mask[..., None] > 0, hidden, -1e9).max(axis=1)
    else:
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    if emb.get("normalize", True):
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled


def eval_sentences(text: str, limit: int = 32) -> list[str]:
    import re

    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.strip()) > 3]
    return parts[:limit] or ["The capital of France is Paris.", "Edge devices run small models."]


def evaluate_encoder(
    model_dir: Path,
    reference_dir: Path,
    *,
    quant: str,
    evaluation_text: str,
    limits: dict[str, Any],
    reference: str,
) -> QualityReport:
    texts = eval_sentences(evaluation_text)
    a, b = embed(model_dir, texts), embed(reference_dir, texts)
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = (na * nb).sum(axis=1)
    rep = QualityReport(
        task="feature-extraction",
        quant=quant,
        reference=reference,
        limits=limits,
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        eval_tokens=len(texts),
    )
    rep.failures = _failures(rep)
    return rep


def torch_cosine(tc: Any, hf_dir: Path, model_dir: Path, texts: Sequence[str]) -> tuple[float, float]:
    """(min, mean) cosine of `model_dir`'s embeddings to the torch fp32 model's (mean pooling,
    normalized), computed in the toolchain env (torch never enters the core env)."""
    from ..toolchains.contract import run_worker

    emb = json.loads((model_dir / md.DESCRIPTOR).read_text())["embedding"]
    req = {"op": "embed_torch", "model_dir": str(hf_dir), "texts": list(texts)}
    req["max_length"] = emb["max_length"]
    ref = np.asarray(run_worker(tc, "optimum_worker.py", req)["embeddings"], dtype=np.float64)
    got = embed(model_dir, texts)
    cos = (got / np.linalg.norm(got, axis=1, keepdims=True) * ref).sum(axis=1)
    return float(cos.min()), float(cos.mean())


def _failures(rep: QualityReport) -> list[str]:
    lim, out = rep.limits, []
    if rep.reference_untrained:
        out.append(
            f"reference perplexity {rep.reference_perplexity:.1f} > {UNTRAINED_FRACTION} x vocabulary size "
            f"{rep.vocab_size}: the fp32 reference is untrained or broken, so the ratio proves nothing"
        )
    if (
        rep.perplexity is not None
        and lim.get("max_perplexity") is not None
        and rep.perplexity > lim["max_perplexity"]
    ):
        out.append(f"perplexity {rep.perplexity:.3f} > {lim['max_perplexity']}")
    ratio = rep.perplexity_ratio
    if (
        ratio is not None
        and lim.get("max_perplexity_ratio") is not None
        and ratio > lim["max_perplexity_ratio"]
    ):
        out.append(f"perplexity ratio {ratio:.3f} > {lim['max_perplexity_ratio']}")
    if (
        rep.cosine_min is not None
        and lim.get("min_cosine") is not None
        and rep.cosine_min < lim["min_cosine"]
    ):
        out.append(f"cosine {rep.cosine_min:.4f} < {lim['min_cosine']}")
    if lim.get("require_golden", True):
        out += [
            f"golden {g.prompt!r}: answer {g.answer[:60]!r} "
            + (
                "lacks " + ", ".join(g.expect_contains)
                if not g.contains_expected
                else "did not stop at end-of-turn"
            )
            for g in rep.golden
            if not g.passed
        ]
    return out


def gate(rep: QualityReport) -> None:
    """Raise CheckFailed with the table when any limit is exceeded (unless the gate is off)."""
    if not rep.failures or rep.gate != "on":
        return
    hints: list[str] = []
    if rep.reference_untrained:
        hints.append("check the source weights: the fp32 reference itself scores like random guessing")
    elif rep.quant == "fp16":
        hints.append("try --quant fp32")
    elif rep.quant != "fp32":  # already full precision: a higher --quant cannot help
        hints.append("try a higher-precision --quant (int8 or fp32)")
    hints += [
        "or relax the recipe's [quality] limits if the answers are acceptable",
        "or build with --no-gate to ship it anyway (the report records that)",
    ]
    raise CheckFailed("quality gate failed:\n" + rep.table(), hints=hints)


def nothing_to_evaluate(evaluation_text: str, golden: Sequence[Any]) -> bool:
    """A recipe without evaluation text and golden prompts gives the gate nothing to check."""
    return not evaluation_text.strip() and not golden
