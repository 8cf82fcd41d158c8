"""Templates: recipe templates are sandboxed, missing variables fail, output paths stay inside."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llmos_edge.bundle import BundleResult
from llmos_edge.bundle.render import render_project, render_recipe_templates
from llmos_edge.errors import BugError, UserError

PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ bundle.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].system('touch /tmp/llmos-sandbox-pwned') }}",
    "{% set x = models.append('evil') %}{{ models }}",
    "{{ bundle.update({'name': 'evil'}) }}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_sandbox_blocks_malicious_recipe_template(payload: str) -> None:
    ctx = {"bundle": {"name": "b"}, "models": ["tiny"]}
    with pytest.raises(UserError) as info:
        render_recipe_templates({"extra/evil.txt": payload}, ctx, "evil-recipe")
    assert "recipe 'evil-recipe'" in info.value.message
    assert ctx == {"bundle": {"name": "b"}, "models": ["tiny"]}
    assert not Path("/tmp/llmos-sandbox-pwned").exists()


def test_sandbox_blocks_payload_in_real_build(build: Callable[..., BundleResult], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sandbox forbids"):
        build(extra_templates={"extra/x.txt": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
    assert not (tmp_path / "out" / "tiny-recipe-rpi4-1.0.0").exists()


def test_recipe_template_renders_into_bundle_and_manifest(build: Callable[..., BundleResult]) -> None:
    res = build(extra_templates={"extra/info.txt": "{{ bundle.name }} on {{ target.platform.arch }} "
                                                   "port {{ runtime_config.port }} {{ models | join(',') }}"})
    assert (res.folder / "extra" / "info.txt").read_text() == "tiny-recipe-rpi4 on aarch64 port 8088 tiny"
    assert "extra/info.txt" in res.manifest["files"]


def test_strict_undefined_in_recipe_template() -> None:
    with pytest.raises(UserError, match="undefined variable") as info:
        render_recipe_templates({"a.txt": "port={{ runtime_config.prot }}"},
                                {"runtime_config": {"port": 1}}, "r")
    assert any("available: runtime_config" in h for h in info.value.hints)


def test_strict_undefined_in_project_templates() -> None:
    """A project template missing a variable is our bug, and must never render as an empty string."""
    with pytest.raises(BugError, match="undefined"):
        render_project("linux-service", {"bundle": {"name": "x", "version": "1"}})


def test_template_syntax_error() -> None:
    with pytest.raises(UserError, match="not a valid Jinja2 template"):
        render_recipe_templates({"a.txt": "{% if %}"}, {}, "r")


@pytest.mark.parametrize("relpath", ["../escape.txt", "/etc/cron.d/evil", "a/../../b", "a/./b", "a//b", "",
                                     "models/tiny/model.onnx", "runtime/llmos_runtime/x.py", "manifest.json",
                                     "manifest.sig", "wheels/x.whl", "a\\..\\b"])
def test_recipe_output_path_is_validated(relpath: str) -> None:
    with pytest.raises(UserError, match="templates entry"):
        render_recipe_templates({relpath: "x"}, {}, "r")


def test_recipe_template_cannot_overwrite_bundle_files(build: Callable[..., BundleResult]) -> None:
    with pytest.raises(UserError, match="would overwrite"):
        build(extra_templates={"config/runtime.json": '{"host": "0.0.0.0"}'})


def test_unknown_bundle_kind() -> None:
    with pytest.raises(UserError, match="no bundle templates"):
        render_project("no-such-kind", {})


@pytest.mark.parametrize("text", ["{% include 'other.txt' %}", "{% extends 'base.txt' %}",
                                  "{% import 'm.txt' as m %}", "{% from 'm.txt' import x %}"])
def test_include_extends_import_refused_exit_2(text: str) -> None:
    """Once a TypeError (exit 1); a recipe template must be self-contained."""
    with pytest.raises(UserError, match="self-contained") as info:
        render_recipe_templates({"a.txt": text}, {}, "r")
    assert info.value.exit_code == 2


@pytest.mark.parametrize("text, match", [
    ("{{ 'x' * 100000000000 }}", "limit is"),
    ("{{ [1] * 10000000 }}", "limit is"),
    ("{{ 9 ** 999999999 }}", "exponent"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "renders more than"),
    ("{{ range(10**9) | list }}", "MAX_RANGE"),
])
def test_oversize_output_refused(text: str, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        render_recipe_templates({"a.txt": text}, {}, "r")
    assert info.value.exit_code == 2


def test_endless_loop_stopped_by_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loops that print nothing never reach the size check: the child process is killed on time."""
    import time

    from llmos_edge.bundle import render

    monkeypatch.setattr(render, "RENDER_TIMEOUT_S", 2.0)
    spin = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(UserError, match="did not finish rendering within 2 s"):
        render_recipe_templates({"a.txt": spin}, {}, "r")
    assert time.monotonic() - started < 10
