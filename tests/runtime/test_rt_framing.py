"""Prompt framing end to end: the build writes it into llmos_model.json, the runtime serves it over
real HTTP (chat vs completion, /v1/models mode), the CLIs and smoke follow it. Real tiny models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_process import llmos

from llmos_edge.errors import UserError
from llmos_edge.runtime.descriptor import read_descriptor
from llmos_edge.runtime.errors import ConfigError
from llmos_edge.stages import model_dir as md

from .rt_helpers import MakeConfig, StartServer, chat, http

CUSTOM = "{% for m in messages %}<<{{ m['role'] }}>>{{ m['content'] }}{% endfor %}<<assistant>>"


def _strip_template(model_dir: Path) -> None:
    """Make the copy a base model: no chat template anywhere in its tokenizer files."""
    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)


def _rewrite(model_dir: Path, **framing: Any) -> dict[str, Any]:
    """Write the descriptor as the build does (stages/model_dir.write_descriptor)."""
    desc = json.loads((model_dir / "llmos_model.json").read_text())
    return md.write_descriptor(
        model_dir,
        name=desc["name"],
        task=desc["task"],
        fmt=desc["format"],
        quant=desc["quant"],
        context_length=desc["context_length"],
        **framing,
    )


@pytest.fixture(scope="module")
def base_dir(decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "base"
    shutil.copytree(decoder_dir, out)
    _strip_template(out)
    desc = _rewrite(out)  # prompt_format "auto" on a model without a template
    assert desc["prompt_format"] == "completion" and desc["chat_template"] is None
    return out


@pytest.fixture(scope="module")
def custom_dir(decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("custom") / "custom"
    shutil.copytree(decoder_dir, out)
    _strip_template(out)
    _rewrite(out, prompt_format="chat", template=CUSTOM)
    return out


def test_descriptor_framing_choices(decoder_dir: Path, tmp_path: Path) -> None:
    own = shutil.copytree(decoder_dir, tmp_path / "own")
    assert _rewrite(own)["prompt_format"] == "chat"  # auto + the model's template
    assert (
        _rewrite(own)["chat_template"]
        == json.loads((own / "tokenizer_config.json").read_text())["chat_template"]
    )
    forced = _rewrite(own, prompt_format="completion")  # a recipe may serve it as a base model
    assert forced["prompt_format"] == "completion" and forced["chat_template"] is None
    assert read_descriptor(own).mode == "completion"
    _strip_template(own)
    with pytest.raises(UserError, match="no chat template") as err:
        _rewrite(own, prompt_format="chat")
    assert any("chat_template_file" in h for h in err.value.hints)


def test_old_descriptor_without_the_field_uses_the_model_template_or_completion(
    decoder_dir: Path, tmp_path: Path
) -> None:
    old = shutil.copytree(decoder_dir, tmp_path / "old")
    desc = json.loads((old / "llmos_model.json").read_text())
    desc.pop("prompt_format", None)
    desc["chat_template"] = None
    (old / "llmos_model.json").write_text(json.dumps(desc))
    assert read_descriptor(old).prompt_format == "chat"  # tokenizer_config.json has one
    _strip_template(old)
    d = read_descriptor(old)
    assert d.prompt_format == "completion" and d.chat_template is None  # never ChatML by default


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt_format": "chatml"}, "prompt_format 'chatml' is not one of"),
        ({"prompt_format": "chat", "chat_template": 42}, "chat_template must be a string"),
        ({"bos_token_id": -1}, "bos_token_id must be a token id"),
        ({"bos_token_id": "1"}, "bos_token_id must be a token id"),
        ({"bos_token_id": True}, "bos_token_id must be a token id"),
    ],
)
def test_hostile_descriptor_framing_is_refused(
    decoder_dir: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    bad = shutil.copytree(decoder_dir, tmp_path / "bad")
    desc = {**json.loads((bad / "llmos_model.json").read_text()), **change}
    (bad / "llmos_model.json").write_text(json.dumps(desc))
    with pytest.raises(ConfigError, match=message):
        read_descriptor(bad)


def test_descriptor_not_an_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "llmos_model.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        read_descriptor(tmp_path)


def test_http_modes_chat_refusal_and_completion(
    make_config: MakeConfig,
    start_server: StartServer,
    decoder_dir: Path,
    base_dir: Path,
    custom_dir: Path,
    encoder_dir: Path,
) -> None:
    server = start_server(
        make_config(
            [
                {"id": "dec", "path": decoder_dir},
                {"id": "base", "path": base_dir},
                {"id": "custom", "path": custom_dir},
                {"id": "enc", "path": encoder_dir},
            ],
            memory_budget_mb=4096,
        )
    )
    listed = {m["id"]: m["mode"] for m in http("GET", server.url + "/v1/models").json()["data"]}
    assert listed == {"dec": "chat", "base": "completion", "custom": "chat", "enc": "embedding"}
    for stream in (False, True):
        r = http("POST", server.url + "/v1/chat/completions", chat("base", stream=stream))
        assert r.status == 400, r.body
        err = r.json()["error"]
        assert err["code"] == "chat_not_supported" and "/v1/completions" in err["message"]
    assert "base" not in http("GET", server.url + "/health").json()["loaded"]  # refused before loading
    done = http(
        "POST",
        server.url + "/v1/completions",
        {"model": "base", "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0},
    )
    assert done.status == 200 and done.json()["usage"]["completion_tokens"] >= 1
    assert http("POST", server.url + "/v1/chat/completions", chat("dec")).status == 200
    assert http("POST", server.url + "/v1/chat/completions", chat("custom")).status == 200


def test_recipe_template_is_what_the_engine_renders(custom_dir: Path) -> None:
    from dataclasses import replace

    from llmos_edge.runtime.engines import EngineOptions, create_engine

    desc = read_descriptor(custom_dir)
    assert desc.chat_template == CUSTOM
    for fmt in ("onnx-genai", "onnx"):
        engine = create_engine(custom_dir, replace(desc, format=fmt), EngineOptions())
        assert engine.render_chat([{"role": "user", "content": "hi"}]) == "<<user>>hi<<assistant>>"
        engine.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return llmos(*args, env={"PYTHONUNBUFFERED": "1"})


def test_run_on_a_base_model_says_completion_and_raw_works(base_dir: Path) -> None:
    p = _cli("run", str(base_dir), "The capital of France is", "--max-tokens", "4")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "completion model" in p.stderr and "--raw" in p.stderr and "Traceback" not in p.stderr
    raw = _cli("run", str(base_dir), "The capital of France is", "--max-tokens", "4", "--raw", "--json")
    assert raw.returncode == 0, raw.stderr
    assert 1 <= json.loads(raw.stdout)["completion_tokens"] <= 4


def test_smoke_sends_chat_golden_prompts_raw_to_a_completion_model(base_dir: Path, tmp_path: Path) -> None:
    golden = {
        "prompts": [
            {"name": "chatty", "messages": [{"role": "user", "content": "The capital"}], "max_tokens": 4},
            {"name": "raw", "prompt": "Edge devices", "max_tokens": 4},
        ]
    }
    gfile = tmp_path / "golden.json"
    gfile.write_text(json.dumps(golden))
    p = _cli("smoke", str(base_dir), "--golden", str(gfile), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert [r["mode"] for r in report["results"]] == ["completion", "completion"]
    assert all(r["ok"] for r in report["results"])


def test_device_run_on_a_base_model(base_dir: Path, tmp_path: Path) -> None:
    """The device's own `python -m llmos_runtime run`: chat refused with the fix, --raw answers."""
    cfg = tmp_path / "runtime.json"
    cfg.write_text(
        json.dumps({"host": "127.0.0.1", "port": 0, "models": [{"id": "b", "path": str(base_dir)}]})
    )
    args = [sys.executable, "-m", "llmos_edge.runtime", "run", "--config", str(cfg), "--max-tokens", "3"]
    chat_try = subprocess.run([*args, "Paris is"], capture_output=True, text=True, timeout=180)
    assert chat_try.returncode == 2 and "completion model" in chat_try.stderr
    raw = subprocess.run([*args, "--raw", "Paris is"], capture_output=True, text=True, timeout=180)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.endswith("\n") and "Traceback" not in raw.stderr


def test_completion_prompts_start_with_the_bos_the_tokenizer_asks_for(
    decoder_dir: Path, tmp_path: Path
) -> None:
    """tokenizer_config add_bos_token -> descriptor bos_token_id -> the runtime prepends it to raw prompts
    (not to rendered chat text, whose template places its own specials)."""
    from llmos_edge.runtime.engines import EngineOptions, create_engine

    d = shutil.copytree(decoder_dir, tmp_path / "bos")
    assert _rewrite(d)["bos_token_id"] is None  # the fixture: add_bos_token false
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_bos_token": True}))
    bos = _rewrite(d)["bos_token_id"]
    assert isinstance(bos, int)
    engine = create_engine(d, read_descriptor(d), EngineOptions())
    try:
        assert engine.encode("The capital")[0] == bos
        assert engine.encode("The capital", add_special_tokens=False)[0] != bos
        assert engine.encode("The capital").count(bos) == 1
    finally:
        engine.close()


def test_build_prompt_answer_follows_the_mode(base_dir: Path, decoder_dir: Path, tmp_path: Path) -> None:
    """`build --prompt` (pipeline.answer) asks a base model with the raw text, a chat model in chat."""
    from llmos_edge.pipeline import BuildResult, answer
    from llmos_edge.plan import make_plan
    from llmos_edge.spec import load_target
    from llmos_edge.spec.models import Recipe

    recipe = Recipe.model_validate(
        {
            "schema_version": 1,
            "name": "tiny",
            "task": "text-generation",
            "source": {"kind": "local", "path": str(tmp_path)},
            "evaluation_text": "x",
        }
    )
    plan = make_plan(load_target("host"), recipe, quant="int4")
    for model in (base_dir, decoder_dir):
        result = BuildResult(plan, tmp_path, model, tmp_path, tmp_path / "i", {})
        assert isinstance(answer(result, "The capital of France is", max_tokens=3), str)
