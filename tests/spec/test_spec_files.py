"""Every shipped target and recipe loads; every invalid fixture fails naming its file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmos_edge import spec
from llmos_edge.errors import SpecError, UserError
from llmos_edge.paths import shipped_dir

HERE = Path(__file__).parent
INVALID = HERE / "invalid"


def _expected_field(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} must start with '# expect: FIELD'"
    return first.removeprefix("# expect: ").strip()


@pytest.mark.parametrize("name", sorted(p.stem for p in shipped_dir("targets").glob("*.toml")))
def test_every_shipped_target_loads(name: str) -> None:
    if spec.loader.is_abstract(name):
        children = [
            p.stem for p in shipped_dir("targets").glob("*.toml") if f'extends = "{name}"' in p.read_text()
        ]
        assert children, f"abstract target {name} is extended by nothing"
        with pytest.raises(UserError, match="abstract"):
            spec.load_target(name)
        return
    target = spec.load_target(name)
    assert target.name == name
    assert target.execution_providers[-1] == "CPUExecutionProvider"
    assert target.smoke.max_first_token_ms > 0


@pytest.mark.parametrize("name", sorted(p.stem for p in shipped_dir("recipes").glob("*.toml")))
def test_every_shipped_recipe_loads(name: str) -> None:
    recipe = spec.load_recipe(name)
    assert recipe.name == name
    assert recipe.evaluation_text.strip(), "a recipe needs evaluation text for the quality gate"
    for override in recipe.targets:
        spec.load_target(override)  # per-target overrides must name real targets


def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, files: list[Path]) -> None:
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setenv(f"LLMOS_EDGE_{kind.upper()}_PATH", str(tmp_path))


@pytest.mark.parametrize("fixture", sorted((INVALID / "targets").glob("*.toml")), ids=lambda p: p.stem)
def test_invalid_target_names_file_and_field(
    fixture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolate(monkeypatch, tmp_path, "targets", list((INVALID / "targets").glob("*.toml")))
    with pytest.raises(SpecError) as info:
        spec.load_target(fixture.stem)
    err = info.value
    assert Path(err.file).name == fixture.name
    assert _expected_field(fixture) in err.field or _expected_field(fixture) in err.message
    assert "Traceback" not in err.render()


@pytest.mark.parametrize("fixture", sorted((INVALID / "recipes").glob("*.toml")), ids=lambda p: p.stem)
def test_invalid_recipe_names_file_and_field(
    fixture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolate(monkeypatch, tmp_path, "recipes", [fixture])
    with pytest.raises(SpecError) as info:
        spec.load_recipe(fixture.stem)
    assert Path(info.value.file).name == fixture.name
    assert _expected_field(fixture) in info.value.field or _expected_field(fixture) in info.value.message


def test_unknown_field_lists_allowed_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(monkeypatch, tmp_path, "targets", [INVALID / "targets" / "unknown_field.toml"])
    with pytest.raises(SpecError, match="allowed here: model_ram_mb, ram_mb, storage_mb"):
        spec.load_target("unknown_field")


def test_extends_deep_merges_and_child_wins() -> None:
    rpi5 = spec.load_target("rpi5")
    assert rpi5.platform.arch == "aarch64"  # from rpi-base
    assert rpi5.platform.cpu == "cortex-a76"  # own
    assert "dotprod" in rpi5.platform.cpu_features
    assert "dotprod" not in spec.load_target("rpi4").platform.cpu_features
    assert rpi5.install.root == "/opt/llmos"  # inherited table
    esp = spec.load_target("esp32s3-host-offload")
    assert esp.transport.kind == "serial" and esp.transport.baud == 921600
    assert esp.esp32 is not None and esp.esp32.psram_mb == 8 and esp.esp32.flash_mb == 16


def test_deep_merge_replaces_lists() -> None:
    merged = spec.deep_merge({"a": {"x": 1, "l": [1, 2]}, "b": 1}, {"a": {"l": [3]}, "c": 2})
    assert merged == {"a": {"x": 1, "l": [3]}, "b": 1, "c": 2}


def test_host_target_is_this_machine() -> None:
    import platform

    arch = spec.load_target("host").platform.arch
    assert arch == {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine())


def test_required_targets_exist() -> None:
    names = {t.name for t in spec.list_targets()}
    assert {"rpi4", "rpi5", "jetson-orin-nano", "esp32s3-host-offload", "host"} <= names
    jetson = spec.load_target("jetson-orin-nano")
    assert jetson.execution_providers[:2] == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert jetson.accelerators[0].compute_capability == "8.7"


def test_user_folder_shadows_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rpi5.toml").write_text('description = "mine"\n' + (HERE / "valid_target.toml").read_text())
    monkeypatch.setenv("LLMOS_EDGE_TARGETS_PATH", str(tmp_path))
    assert spec.load_target("rpi5").description == "mine"


def test_recipe_by_path_resolves_relative_source(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('evaluation_text = "x"\n' + (HERE / "valid_recipe.toml").read_text())
    recipe = spec.load_recipe(str(path))
    assert recipe.source.path == str(tmp_path / "model.gguf")
