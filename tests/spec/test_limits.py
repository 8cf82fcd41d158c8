"""Hostile spec files: deep nesting, huge files, and control characters headed for a systemd unit.

Run through the real CLI (`python -m llmos_edge ...`) so the exit code is the one a user sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_process import llmos

from llmos_edge.errors import SpecError
from llmos_edge.spec.limits import MAX_DEPTH, nesting_depth, read_toml

HERE = Path(__file__).parent
DEEP = 100_000


_cli = llmos


def _deep_target(folder: Path, name: str, nest: str) -> Path:
    base = (HERE / "valid_target.toml").read_text()
    (folder / f"{name}.toml").write_text(base.replace('[platform]', f'x = {nest}\n[platform]', 1))
    return folder


@pytest.mark.parametrize("nest", ["[" * DEEP + "]" * DEEP, "{a = " * DEEP + "1" + "}" * DEEP,
                                  "[" * DEEP])
def test_100k_nested_brackets_exit_2_not_recursionerror(nest: str, tmp_path: Path) -> None:
    """Once a RecursionError with exit 1 (a crash); now a spec error naming the file."""
    _deep_target(tmp_path, "deep", nest)
    p = _cli("targets", "show", "deep", env={"LLMOS_EDGE_TARGETS_PATH": str(tmp_path)})
    assert p.returncode == 2, p.stderr[-2000:]
    assert "deep.toml" in p.stderr and "nests brackets" in p.stderr
    assert "Traceback" not in p.stderr and "RecursionError" not in p.stderr


def test_deep_inventory_is_a_spec_error(tmp_path: Path) -> None:
    from llmos_edge.deploy.fleet import load_inventory

    inv = tmp_path / "fleet.toml"
    inv.write_text("x = " + "[" * DEEP + "]" * DEEP + "\n")
    with pytest.raises(SpecError, match="nests brackets") as info:
        load_inventory(inv)
    assert info.value.exit_code == 2 and info.value.file == str(inv)


def test_brackets_inside_strings_and_comments_do_not_count(tmp_path: Path) -> None:
    text = ('a = "' + "[" * 500 + '"\nb = \'' + "{" * 500 + "'\n# " + "[" * 500
            + '\nc = """\n' + "[" * 500 + '\n"""\n')
    (tmp_path / "s.toml").write_text(text)
    assert read_toml(tmp_path / "s.toml")["b"] == "{" * 500
    assert nesting_depth(json.dumps({"k": "]]]][[[[" * 100, "l": [[1]]}), toml=False) == 3


def test_depth_limit_edge(tmp_path: Path) -> None:
    ok = "x = " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    (tmp_path / "ok.toml").write_text(ok)
    read_toml(tmp_path / "ok.toml")
    (tmp_path / "bad.toml").write_text("x = " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n")
    with pytest.raises(SpecError, match="nests brackets"):
        read_toml(tmp_path / "bad.toml")


def test_oversize_and_binary_toml_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (5 << 20) + "\n")
    with pytest.raises(SpecError, match="the limit is"):
        read_toml(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"a = \"\xff\xfe\"\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        read_toml(binary)


def test_execstartpre_injection_never_reaches_the_unit(tmp_path: Path) -> None:
    """The reported attack, by the user's path: a target whose install.user smuggles a root line."""
    (tmp_path / "evil.toml").write_text((HERE / "invalid" / "targets" / "user_newline.toml").read_text())
    p = _cli("targets", "show", "evil", env={"LLMOS_EDGE_TARGETS_PATH": str(tmp_path)})
    assert p.returncode == 2 and "install.user" in p.stderr and "is not a user name" in p.stderr
    assert not Path("/tmp/pwned").exists()


def test_deep_recipe_exit_2(tmp_path: Path) -> None:
    nest = "[" * DEEP + "]" * DEEP
    (tmp_path / "deep.toml").write_text(f'schema_version = 1\ntask = "text-generation"\nx = {nest}\n')
    p = _cli("recipes", "show", "deep", env={"LLMOS_EDGE_RECIPES_PATH": str(tmp_path)})
    assert p.returncode == 2, p.stderr[-2000:]
    assert "deep.toml" in p.stderr and "nests brackets" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("content, needle", [(b"\xff\xfe not text", "not UTF-8"), (None, "is over 64 MiB")])
def test_evaluation_file_checked(tmp_path: Path, content: bytes | None, needle: str) -> None:
    from llmos_edge import spec

    ev = tmp_path / "eval.txt"
    if content is None:
        with open(ev, "wb") as f:  # sparse: 65 MiB without writing them
            f.truncate(65 << 20)
    else:
        ev.write_bytes(content)
    recipe = tmp_path / "r.toml"
    recipe.write_text('schema_version = 1\ntask = "text-generation"\nevaluation_file = "eval.txt"\n'
                      '[source]\nkind = "gguf"\npath = "m.gguf"\n')
    with pytest.raises(SpecError, match=needle) as info:
        spec.load_recipe(str(recipe))
    assert info.value.field == "evaluation_file"
