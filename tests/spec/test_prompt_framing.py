"""Recipe prompt framing: chat_template_file resolves like evaluation_file; hostile files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos_edge.errors import SpecError
from llmos_edge.spec import load_recipe

HEAD = 'schema_version = 1\ntask = "text-generation"\n'
SOURCE = '[source]\nkind = "gguf"\npath = "model.gguf"\n'


def _recipe(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "r.toml"
    path.write_text(HEAD + body + SOURCE)
    return path


def test_template_file_is_relative_to_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "recipes" / "tpl").mkdir(parents=True)
    (tmp_path / "recipes" / "tpl" / "chat.jinja").write_text("{{ messages[0]['content'] }}")
    path = _recipe(tmp_path / "recipes", 'chat_template_file = "tpl/chat.jinja"\n')
    monkeypatch.chdir(tmp_path)  # not the current directory
    recipe = load_recipe(str(path))
    assert recipe.chat_template == "{{ messages[0]['content'] }}" and recipe.prompt_format == "auto"
    assert load_recipe(str(_recipe(tmp_path / "b", 'prompt_format = "completion"\n'))).chat_template is None


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (b"x" * 70_000, "", "over 64 KiB"),
        (b"\xff\xfe{{ bad }}", "", "not UTF-8"),
        (b"{{ ok }}", 'chat_template = "{{ inline }}"\n', "not both"),
    ],
)
def test_hostile_template_files(tmp_path: Path, content: bytes, extra: str, message: str) -> None:
    (tmp_path / "t.jinja").write_bytes(content)
    path = _recipe(tmp_path, f'chat_template_file = "t.jinja"\n{extra}')
    with pytest.raises(SpecError, match=message) as err:
        load_recipe(str(path))
    assert err.value.field == "chat_template_file"


def test_template_on_an_encoder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.toml"
    path.write_text(
        'schema_version = 1\ntask = "feature-extraction"\nchat_template = "{{ x }}"\n'
        '[source]\nkind = "local"\npath = "m"\n'
    )
    with pytest.raises(SpecError, match="chat_template is for text-generation"):
        load_recipe(str(path))
