"""Refusals at `plan` time, through the real CLI exactly as a user types it: an architecture no exporter
takes, a source of the wrong kind, a build host without the [tflite] extra. Each must answer in under
5 s with exit 2, the reason and the fix, and no traceback. `recipes check` prints the same verdict."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
from cli_process import llmos

from llmos_edge.errors import UserError
from llmos_edge.stages.probe import gguf_architecture

FAST_S = 5.0


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = llmos(*args, env=env, timeout=60)
    return proc, time.monotonic() - t0


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(kvs: list[tuple[str, int, bytes]], *, version: int = 3, n_kv: int | None = None) -> bytes:
    """A GGUF header: magic, version, tensor count, kv count, then (key, type, raw value) entries."""
    out = b"GGUF" + struct.pack("<IQQ", version, 1, len(kvs) if n_kv is None else n_kv)
    for key, vtype, value in kvs:
        out += _s(key) + struct.pack("<I", vtype) + value
    return out


def arch_kv(name: str) -> tuple[str, int, bytes]:
    return ("general.architecture", 8, _s(name))


def _vocab_array(n: int) -> tuple[str, int, bytes]:
    return ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, n) + b"".join(_s(f"t{i}") for i in range(n)))


def write_recipe(folder: Path, name: str, kind: str, path: Path, task: str = "text-generation") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / f"{name}.toml"
    recipe.write_text(
        f'schema_version = 1\ntask = "{task}"\nparams_m = 1.0\n[source]\nkind = "{kind}"\npath = "{path}"\n'
    )
    return recipe


def hf_folder(tmp: Path, architecture: str, model_type: str) -> Path:
    folder = tmp / f"hf-{model_type}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"architectures": [architecture], "model_type": model_type})
    )
    return folder


def assert_refused(proc: subprocess.CompletedProcess[str], secs: float, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert secs < FAST_S, f"refusal took {secs:.1f} s"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def test_gpt2_hf_folder_refused_at_plan(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "my-gpt2", "local", hf_folder(tmp_path, "GPT2LMHeadModel", "gpt2"))
    proc, secs = run_cli("plan", "--recipe", str(recipe))
    assert_refused(
        proc, secs, "architecture 'GPT2LMHeadModel' has no onnx-genai exporter", "LlamaForCausalLM"
    )


def test_gpt2_gguf_refused_at_plan(tmp_path: Path) -> None:
    gguf = tmp_path / "gpt2.gguf"
    gguf.write_bytes(gguf_bytes([("general.name", 8, _s("x")), _vocab_array(50), arch_kv("gpt2")]))
    recipe = write_recipe(tmp_path, "gpt2-gguf", "gguf", gguf)
    proc, secs = run_cli("plan", "--recipe", str(recipe))
    assert_refused(proc, secs, "architecture 'gpt2'", "supported for onnx-genai")


def test_recipes_check_prints_the_verdict(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "my-llama", "local", hf_folder(tmp_path, "LlamaForCausalLM", "llama"))
    proc, secs = run_cli("recipes", "check", str(recipe))
    assert proc.returncode == 0 and secs < FAST_S, proc.stderr
    assert "architecture: LlamaForCausalLM" in proc.stdout and "verdict: OK" in proc.stdout
    assert "format: onnx-genai" in proc.stdout and "also_buildable_as: tflite" in proc.stdout
    refused = write_recipe(tmp_path, "my-gpt2", "local", hf_folder(tmp_path, "GPT2LMHeadModel", "gpt2"))
    proc, secs = run_cli("recipes", "check", str(refused))
    assert_refused(proc, secs, "GPT2LMHeadModel")


def test_recipes_check_by_name_through_the_recipes_path(tmp_path: Path) -> None:
    write_recipe(tmp_path / "recipes", "mine", "local", hf_folder(tmp_path, "Qwen2ForCausalLM", "qwen2"))
    proc, _ = run_cli("recipes", "check", "mine", env={"LLMOS_EDGE_RECIPES_PATH": str(tmp_path / "recipes")})
    assert proc.returncode == 0 and "Qwen2ForCausalLM" in proc.stdout, proc.stderr


def test_folder_given_as_gguf_gets_the_fix(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "wrong-kind", "gguf", hf_folder(tmp_path, "LlamaForCausalLM", "llama"))
    for cmd in (("plan", "--recipe", str(recipe)), ("recipes", "check", str(recipe))):
        proc, secs = run_cli(*cmd)
        assert_refused(proc, secs, 'kind = "gguf"', 'kind = "local"')


def test_gguf_given_as_local_gets_the_fix(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(gguf_bytes([arch_kv("llama")]))
    recipe = write_recipe(tmp_path, "wrong-kind", "local", gguf)
    proc, secs = run_cli("plan", "--recipe", str(recipe))
    assert_refused(proc, secs, 'kind = "local"', 'set [source] kind = "gguf"')


def test_missing_source_path(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "gone", "local", tmp_path / "nowhere")
    proc, secs = run_cli("plan", "--recipe", str(recipe))
    assert_refused(proc, secs, "does not exist")


def test_missing_tflite_extra_refused_before_export(tmp_path: Path) -> None:
    """No real environment here lacks ai-edge-litert (the test extra installs it), so a package of that
    name that fails to import, first on the path, stands in for an install without the extra."""
    shadow = tmp_path / "shadow" / "ai_edge_litert"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ai_edge_litert'\")\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])}
    proc, secs = run_cli("plan", "--target", "rpi5-litert", env=env)
    assert_refused(proc, secs, "format tflite needs ai_edge_litert", "pip install 'llmos-edge[tflite]'")
    proc, secs = run_cli("build", "--target", "rpi5-litert", env=env)
    assert_refused(proc, secs, "pip install 'llmos-edge[tflite]'")
    proc, _ = run_cli("plan", "--target", "rpi5", env=env)  # ONNX builds do not need it
    assert proc.returncode == 0, proc.stderr


# --- hostile headers and configs: bounded, clear, never a traceback --------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGU", "truncated"),
        (b"NOPE" + b"\0" * 20, "not a GGUF file"),
        (gguf_bytes([arch_kv("llama")], version=1), "unsupported GGUF version 1"),
        (gguf_bytes([], n_kv=10**12), "metadata entries"),
        (gguf_bytes([("general.name", 8, _s("x"))]), "no general.architecture"),
        (gguf_bytes([arch_kv("llama")])[:-3], "truncated"),
        (gguf_bytes([("general.architecture", 4, struct.pack("<I", 7))]), "is not a string"),
        (gguf_bytes([("k", 99, b"")]), "value type 99"),
        (gguf_bytes([("k", 9, struct.pack("<IQ", 9, 1))]), "array of type 9"),
        # a key claiming 2**62 bytes, and an array claiming 2**60 u64 entries: no allocation, just refusal
        (b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + struct.pack("<Q", 2**62), "-byte key"),
        (gguf_bytes([("k", 9, struct.pack("<IQ", 10, 2**60))]), "truncated"),
        (gguf_bytes([("k", 8, struct.pack("<Q", 2**63))]), "truncated"),
        (gguf_bytes([("k", 9, struct.pack("<IQ", 8, 2**40))]), "an array of 1099511627776 strings"),
    ],
)
def test_hostile_gguf_headers(data: bytes, message: str) -> None:
    with pytest.raises(UserError, match=message):
        gguf_architecture(io.BytesIO(data), "x.gguf")


def test_lying_lengths_stop_at_the_metadata_budget() -> None:
    """A header whose lengths point gigabytes ahead is refused after 64 MiB, quickly, not scanned."""
    body = struct.pack("<IQ", 10, 2**40)  # an array claiming 2**40 u64 values...
    data = gguf_bytes([("k", 9, body)]) + b"\0" * (65 << 20)  # ...over 65 MiB of real bytes
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"no general\.architecture in the first 64 MiB"):
        gguf_architecture(io.BytesIO(data), "x.gguf")
    assert time.monotonic() - t0 < FAST_S
    many = gguf_bytes([("k", 9, struct.pack("<IQ", 8, 999_999) + b"\0" * 8 * 999_999)])
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"no general\.architecture"):
        gguf_architecture(io.BytesIO(many), "x.gguf")
    assert time.monotonic() - t0 < FAST_S


def test_gguf_architecture_after_a_vocabulary_and_control_characters() -> None:
    data = gguf_bytes(
        [_vocab_array(2000), ("general.alignment", 4, struct.pack("<I", 32)), arch_kv("lla\x1bma")]
    )
    assert gguf_architecture(io.BytesIO(data), "x.gguf") == "lla?ma"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"architectures": [123]}), "names no architecture"),
        (json.dumps({"model_type": None}), "names no architecture"),
        (" " * (5 << 20) + "{}", "too large"),
    ],
)
def test_hostile_configs_refused_at_plan(tmp_path: Path, content: str, message: str) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(content)
    recipe = write_recipe(tmp_path, "bad", "local", folder)
    proc, secs = run_cli("plan", "--recipe", str(recipe))
    assert_refused(proc, secs, message)


@pytest.mark.parametrize(
    ("recipe", "target"), [("smollm2-135m-instruct", "rpi5"), ("all-minilm-l6-v2", "rpi5-litert")]
)
def test_recipes_check_shipped_recipes(recipe: str, target: str) -> None:
    proc, secs = run_cli("recipes", "check", recipe, "--target", target, "--json")
    assert proc.returncode == 0 and secs < FAST_S, proc.stderr
    data = json.loads(proc.stdout)
    assert data["verdict"] == "OK" and data["recipe"] == recipe
    assert data["architecture"] in ("llama", "BertModel") or data["architecture"].startswith(
        "unknown until fetch"
    )


def test_hf_source_read_from_the_local_cache_or_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "hf-model.toml"
    recipe.write_text(
        'schema_version = 1\ntask = "text-generation"\n[source]\nkind = "hf"\nid = "org/gpt2ish"\n'
    )
    hub = tmp_path / "hub"
    proc, secs = run_cli("plan", "--recipe", str(recipe), env={"HF_HUB_CACHE": str(hub)})
    assert_refused(proc, secs, "not in the local cache")
    snap = hub / "models--org--gpt2ish" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (hub / "models--org--gpt2ish" / "refs").mkdir()
    (hub / "models--org--gpt2ish" / "refs" / "main").write_text("abc")
    (snap / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    proc, secs = run_cli("plan", "--recipe", str(recipe), env={"HF_HUB_CACHE": str(hub)})
    assert_refused(proc, secs, "GPT2LMHeadModel")


def _config_folder(tmp: Path, name: str, config: dict[str, object]) -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_phi3_position_fields_and_gemma3_plan_for_onnx_genai(tmp_path: Path) -> None:
    """Layouts the genai builder misread (KeyError 'multi_cache' / 'rope_type') are normalized for it
    now (genai_config_fix.py; built in tests/build/test_misread_configs.py), so plan takes them."""
    phi3 = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3"}
    configs = [
        {**phi3, "max_position_embeddings": 4096, "original_max_position_embeddings": 2048},
        {**phi3, "max_position_embeddings": 4096, "original_max_position_embeddings": 4096},
        {
            **phi3,
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]},
        },
    ]
    folders = [_config_folder(tmp_path, f"phi3-{i}", cfg) for i, cfg in enumerate(configs)]
    folders.append(hf_folder(tmp_path, "Gemma3ForCausalLM", "gemma3_text"))
    for i, folder in enumerate(folders):
        proc, secs = run_cli("plan", "--recipe", str(write_recipe(tmp_path, f"m{i}", "local", folder)))
        assert proc.returncode == 0, proc.stderr
        assert "onnx-genai" in proc.stdout and secs < FAST_S, proc.stdout


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_gguf_kind_on_a_device_or_fifo_is_refused_without_reading(tmp_path: Path, special: str) -> None:
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "model.gguf"
        os.mkfifo(path)  # opening it for reading would block forever
    recipe = write_recipe(tmp_path, "odd", "gguf", path)
    proc, secs = run_cli("plan", "--recipe", str(recipe))
    assert_refused(proc, secs, "is not a regular file")
