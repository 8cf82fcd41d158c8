"""The formats table (llmos_edge/formats.py) and its guards: every entry has a tiny-model test, every
source file an exporter runs is in its stage keys, and plan, CLI and runtime agree with the table."""

from __future__ import annotations

import ast
import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

import llmos_edge
from llmos_edge import cache, formats, spec
from llmos_edge.errors import UserError
from llmos_edge.plan import make_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from formats_guard import PKG, left_out, stage_code_closure

ROOT = Path(__file__).resolve().parents[2]
# (format, task) -> the test that builds a tiny real model of that entry through the real toolchain
TINY_MODEL_TESTS: dict[tuple[str, str], str] = {
    ("onnx-genai", "text-generation"): "tests/build/test_build_model.py::test_cold_warm_and_changed_quant",
    ("onnx", "feature-extraction"): "tests/encoders/test_encoder_build.py::"
    "test_encoder_recipe_builds_serves_and_smokes",
    ("tflite", "text-generation"): "tests/pipeline/test_build_tflite.py::test_tiny_decoder_tflite_bundle",
    ("tflite", "feature-extraction"): "tests/build/test_formats.py::test_tiny_encoder_tflite_build",
}


def _test_exists(node_id: str) -> bool:
    path, _, name = node_id.partition("::")
    file = ROOT / path
    if not file.is_file():
        return False
    tree = ast.parse(file.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def test_every_table_entry_has_a_tiny_model_test() -> None:
    entries = {e.key for e in formats.EXPORTERS}
    untested = entries - set(TINY_MODEL_TESTS)
    assert not untested, f"formats table entries without a tiny-model test: {sorted(untested)}"
    assert set(TINY_MODEL_TESTS) <= entries, "a tiny-model test names an entry the table no longer has"
    missing = [t for t in TINY_MODEL_TESTS.values() if not _test_exists(t)]
    assert missing == [], f"named tiny-model tests that do not exist: {missing}"


def test_one_entry_per_format_and_task() -> None:
    keys = [e.key for e in formats.EXPORTERS]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("builder", sorted({e.builder for e in formats.EXPORTERS}))
def test_stage_keys_cover_every_file_the_exporter_runs(builder: str) -> None:
    assert left_out(formats.EXPORTERS, builder) == set()
    assert f"build_model/{builder}.py" in stage_code_closure(builder)


def test_guard_fails_when_a_tflite_source_is_left_out() -> None:
    """The guard itself: drop stages/tflite.py (or the worker) from the table and it must say so."""
    for dropped in ("stages/tflite.py", "toolchains/workers/tflite_export.py", "runtime/engine_tflite.py"):
        table = tuple(
            dataclasses.replace(
                e, stage_code={s: tuple(f for f in fs if f != dropped) for s, fs in e.stage_code.items()}
            )
            if e.format == "tflite"
            else e
            for e in formats.EXPORTERS
        )
        assert left_out(table, "tflite") == {dropped}


def test_every_stage_code_file_exists() -> None:
    missing = [
        f"{e.format}/{e.task} {stage}: {rel}"
        for e in formats.EXPORTERS
        for stage, files in e.stage_code.items()
        for rel in files
        if not (PKG / rel).is_file()
    ]
    assert missing == []


def test_tflite_edit_changes_tflite_keys_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stale-cache bug: an edit to the TFLite sources must change the TFLite stage keys."""
    copy = tmp_path / "llmos_edge"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "_PKG", copy)
    tfl = formats.find("tflite", "text-generation")
    genai = formats.find("onnx-genai", "text-generation")
    assert tfl is not None and genai is not None

    def keys() -> dict[str, str]:
        return {
            f"{e.format}:{s}": cache.stage_key(s, {}, {}, None, code=cache.code_files(e, s))
            for e in (tfl, genai)
            for s in ("export", "evaluate")
        }

    for edited in ("stages/tflite.py", "toolchains/workers/tflite_export.py", "build_model/tflite.py"):
        before = keys()
        with (copy / edited).open("a") as f:
            f.write("\n# edited\n")
        after = keys()
        changed = {k for k in before if before[k] != after[k]}
        assert changed == {"tflite:export", "tflite:evaluate"}, (edited, changed)


def test_backends_and_toolchains_exist() -> None:
    from llmos_edge.runtime.engines import REGISTRY
    from llmos_edge.toolchains.manager import TOOLCHAINS

    for e in formats.EXPORTERS:
        assert REGISTRY.get(e.key) == e.backend, e.key
        assert e.toolchain in TOOLCHAINS, e.key
        assert set(e.quants) <= set(formats.QUANTS)
        assert e.architectures, f"{e.key} lists no supported architecture"


def test_tflite_stage_quants_match_the_table() -> None:
    from llmos_edge.stages import tflite

    for task in ("text-generation", "feature-extraction"):
        e = formats.find("tflite", task)
        assert e is not None and set(e.quants) <= set(tflite.QUANTS)
    assert "int4" not in formats.find("tflite", "feature-extraction").quants  # type: ignore[union-attr]


def test_cli_choices_come_from_the_table() -> None:
    from llmos_edge.cli import build_cmds

    params = {p.name: p for p in build_cmds.build_cmd.params}
    assert tuple(params["fmt"].type.choices) == formats.FORMATS  # type: ignore[attr-defined]
    assert tuple(params["quant"].type.choices) == formats.QUANTS  # type: ignore[attr-defined]


def test_rpi5_litert_plan_is_what_the_tflite_path_runs() -> None:
    """`plan --target rpi5-litert` listed prepare/quantize and a 2048 context the TFLite path never runs."""
    plan = make_plan(spec.load_target("rpi5-litert"), spec.load_recipe("smollm2-135m-instruct"))
    assert plan.stages == ("fetch", "export", "evaluate", "bundle")
    assert plan.context_length == formats.TFLITE_DECODER_CONTEXT == 512
    assert any("context capped at 512" in n for n in plan.notes)
    enc = make_plan(spec.load_target("rpi5-litert"), spec.load_recipe("all-minilm-l6-v2"))
    assert enc.context_length <= formats.TFLITE_ENCODER_SEQ


def test_local_hf_source_plans_no_prepare_stage(tmp_path: Path) -> None:
    recipe = spec.load_recipe("smollm2-135m-instruct").model_copy(
        update={"source": spec.Source(kind="local", path=str(tmp_path))}
    )
    plan = make_plan(spec.load_target("host"), recipe)
    assert plan.stages == ("fetch", "export", "quantize", "evaluate", "bundle")


def test_unsupported_architecture_is_refused_with_the_list() -> None:
    recipe = spec.load_recipe("smollm2-135m-instruct")
    with pytest.raises(UserError, match="architecture 'GPT2LMHeadModel' has no onnx-genai exporter") as ei:
        make_plan(spec.load_target("host"), recipe, architecture="GPT2LMHeadModel")
    assert "LlamaForCausalLM" in ei.value.hints[0] and "Qwen2ForCausalLM" in ei.value.hints[0]
    ok = make_plan(spec.load_target("host"), recipe, architecture="llama")  # GGUF general.architecture
    assert ok.architecture == "llama"


def test_gguf_encoder_is_refused_at_plan(tmp_path: Path) -> None:
    recipe = spec.load_recipe("all-minilm-l6-v2").model_copy(
        update={"source": spec.Source(kind="gguf", path=str(tmp_path / "m.gguf"))}
    )
    with pytest.raises(UserError, match="GGUF source can only feed a text-generation"):
        make_plan(spec.load_target("host"), recipe)


def test_decoder_as_plain_onnx_is_refused() -> None:
    """No exporter makes a plain-ONNX decoder (yet): refuse instead of silently building onnx-genai."""
    with pytest.raises(UserError, match="no exporter for text-generation") as ei:
        make_plan(spec.load_target("host"), spec.load_recipe("smollm2-135m-instruct"), format="onnx")
    assert any("onnx-genai" in h for h in ei.value.hints)


def test_docs_tables_are_the_registry() -> None:
    """docs/spec.md's formats and architectures tables are generated from the table, not hand-kept."""
    doc = (ROOT / "docs" / "spec.md").read_text()
    start, end = "<!-- formats-table:start -->\n", "<!-- formats-table:end -->"
    assert start in doc and end in doc
    block = doc.split(start, 1)[1].split(end, 1)[0]
    assert block == formats.markdown(), (
        "regenerate: python -c 'from llmos_edge import formats; print(formats.markdown())'"
    )
    for _fmt, _task, hf_class, _types in formats.architecture_table():
        assert f"| {hf_class} |" in block


@pytest.mark.slow
def test_tiny_encoder_tflite_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(tflite, feature-extraction) on the tiny BERT: litert-torch export, cosine gate, served."""
    pytest.importorskip("ai_edge_litert", reason="the TFLite gate needs ai-edge-litert (the [tflite] extra)")
    import numpy as np
    from fixtures_models import tiny_bert_hf_dir

    from llmos_edge.runtime.config import config_for_model_dirs
    from llmos_edge.runtime.descriptor import read_descriptor
    from llmos_edge.runtime.engines import EngineOptions, create_engine

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny-enc-tfl.toml").write_text(
        'schema_version = 1\ntask = "feature-extraction"\ncontext_length = 64\n'
        'evaluation_text = "The capital of France is Paris. Edge devices run small models."\n'
        f'[source]\nkind = "local"\npath = "{tiny_bert_hf_dir()}"\n'
        "[quality]\nrequire_golden = false\nmin_cosine = 0.9\n"
    )
    monkeypatch.setenv("LLMOS_EDGE_RECIPES_PATH", str(recipes))
    result = llmos_edge.build(
        "host",
        "tiny-enc-tfl",
        format="tflite",
        quant="int8",
        out=tmp_path / "out",
        unsigned=True,
        wheels=False,
        progress=False,
    )
    desc = read_descriptor(result.model_dir)
    assert (desc.format, desc.task, desc.context_length) == ("tflite", "feature-extraction", 64)
    assert result.plan.stages == ("fetch", "export", "evaluate", "bundle")
    quality = result.report["model"]["quality"]
    assert quality["passed"] and quality["cosine_min"] >= 0.9, quality
    assert config_for_model_dirs([result.model_dir]).models
    engine = create_engine(result.model_dir, desc, EngineOptions())
    vec = np.asarray(engine.embed(["edge devices run small models"]))
    assert vec.shape[0] == 1 and np.isfinite(vec).all()
