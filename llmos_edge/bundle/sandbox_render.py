"""Child process that renders a recipe's templates: Jinja's sandbox inside an OS-level budget.

Recipe templates are data from outside. Jinja's ImmutableSandboxedEnvironment stops attribute
tricks ({{ ''.__class__.__mro__ }}), but not loops that spin or strings that grow without end,
so the parent runs this in its own process with a wall-clock timeout and a memory cap, and we
cap '*' / '**' results and the output size here. {% include %}, {% extends %} and {% import %}
are refused: a recipe template is one self-contained string.

Protocol: one JSON object on stdin {"templates": {name: text}, "context": {...}, "max_bytes": N};
one JSON object on stdout: {"ok": {name: text}} or {"error": {"template", "kind", "message"}}.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MAX_OPERAND_RESULT = 1 << 20  # longest string / list a single '*' may build


def _env() -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class _Budgeted(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and abs(right) > 64:
                raise SecurityError(f"exponent {right} is over the template limit of 64")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > \
                            MAX_OPERAND_RESULT:
                        raise SecurityError(f"'*' would build {len(seq) * n} items; the limit is "
                                            f"{MAX_OPERAND_RESULT}")
            return super().call_binop(context, operator, left, right)

    env = _Budgeted(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["to_json"] = lambda v: json.dumps(v, indent=2, sort_keys=True, ensure_ascii=True)
    return env


def _forbidden_tag(env: Any, text: str) -> str | None:
    from jinja2 import nodes

    for kind, tag in ((nodes.Include, "include"), (nodes.Extends, "extends"), (nodes.Import, "import"),
                      (nodes.FromImport, "from ... import")):
        if next(env.parse(text).find_all(kind), None) is not None:
            return tag
    return None


def render_one(env: Any, text: str, context: dict[str, Any], budget: int) -> str:
    """Render, stopping as soon as the output passes the byte budget."""
    tag = _forbidden_tag(env, text)
    if tag:
        raise _Refused("forbidden", f"uses {{% {tag} %}}; recipe templates must be self-contained")
    parts, size = [], 0
    for chunk in env.from_string(text).generate(**context):
        size += len(chunk)
        if size > budget:
            raise _Refused("size", f"renders more than {budget} bytes")
        parts.append(chunk)
    return "".join(parts)


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _classify(exc: BaseException) -> tuple[str, str]:
    import jinja2
    from jinja2.sandbox import SecurityError

    if isinstance(exc, _Refused):
        return exc.kind, str(exc)
    if isinstance(exc, SecurityError):
        return "security", str(exc)
    if isinstance(exc, jinja2.UndefinedError):
        return "undefined", str(exc.message)
    if isinstance(exc, jinja2.TemplateError):
        return "syntax", str(exc)
    if isinstance(exc, MemoryError):
        return "size", "ran out of its memory budget"
    if isinstance(exc, OverflowError):  # the sandbox's own range() cap
        return "size", str(exc)
    return "error", f"{type(exc).__name__}: {exc}"


def main() -> None:
    request = json.load(sys.stdin)
    env, budget = _env(), int(request["max_bytes"])
    out: dict[str, str] = {}
    for name in sorted(request["templates"]):
        try:
            out[name] = render_one(env, request["templates"][name], request["context"], budget)
        except Exception as exc:  # every failure goes back as data; the parent decides the exit code
            kind, message = _classify(exc)
            json.dump({"error": {"template": name, "kind": kind, "message": message}}, sys.stdout)
            return
        budget -= len(out[name])
    json.dump({"ok": out}, sys.stdout)


if __name__ == "__main__":
    main()
