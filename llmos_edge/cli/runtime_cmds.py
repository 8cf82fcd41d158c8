"""`run`, `serve`, `smoke`: thin commands over the on-device runtime (llmos_edge.runtime)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import CheckFailed, UserError

if TYPE_CHECKING:
    from ..runtime.config import RuntimeConfig


@contextlib.contextmanager
def _runtime_errors() -> Iterator[None]:
    """Map the self-contained runtime's errors onto the CLI's categories."""
    from ..runtime.errors import ApiError, RuntimeFailure

    try:
        yield
    except ApiError as exc:
        raise UserError(
            exc.message, hints=["check the model id and parameters", "`llmos-edge inspect BUNDLE`"]
        ) from exc
    except RuntimeFailure as exc:
        raise UserError(str(exc)) from exc


@dataclass(frozen=True)
class Trust:
    """How serve/run/smoke check a bundle: the same key settings as deploy (--key, else the default)."""

    key: Path | None = None
    allow_unsigned: bool = False

    def open(self, path: Path) -> Path:
        """A verified bundle folder (images are verified before extraction); model dirs pass as is."""
        if is_model_dir(path):
            return path  # a bare model folder from a build stage: no manifest to check, no config to trust
        if path.is_dir() and not any((path / n).exists() for n in ("manifest.json", "config")):
            raise _not_a_bundle(path)
        from ..bundle.keyplace import default_public_key
        from ..bundle.verify import verify_bundle

        manifest = verify_bundle(path, self.key or default_public_key(), allow_unsigned=self.allow_unsigned)
        if manifest.unsigned_allowed:
            click.echo(f"WARNING: bundle {path} is NOT signature-checked; loading it because "
                       "--allow-unsigned was given (recorded)", err=True)
        return manifest.folder


def _not_a_bundle(path: Path) -> UserError:
    return UserError(f"{path} is neither a bundle (config/runtime.json) nor a model dir (llmos_model.json)",
                     hints=["pass the output folder of `llmos-edge build`, or its .tar.gz image"])


def is_model_dir(path: Path) -> bool:
    """A model folder (llmos_model.json) that does not pretend to be a bundle."""
    return (path.is_dir() and (path / "llmos_model.json").is_file()
            and not (path / "manifest.json").exists() and not (path / "config").exists())


def resolve_config(paths: list[Path], device_key: Path | None, trust: Trust) -> RuntimeConfig:
    """Bundle folders/images (config/runtime.json) and model dirs (llmos_model.json) -> one config.

    Bundles are verified (signature, then every file) before anything in them is read.
    """
    return config_of([trust.open(p) for p in paths], device_key)


def config_of(folders: list[Path], device_key: Path | None) -> RuntimeConfig:
    """One config from folders already opened by Trust.open."""
    from ..runtime.config import config_for_model_dirs, load_config

    configs = []
    for p in folders:
        if (p / "config" / "runtime.json").is_file():
            configs.append(load_config(p / "config" / "runtime.json"))
        elif (p / "llmos_model.json").is_file():
            configs.append(config_for_model_dirs([p]))
        else:
            raise _not_a_bundle(p)
    models = tuple(m for c in configs for m in c.models)
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise UserError(f"two inputs serve the same model id: {ids}", hints=["serve each bundle separately"])
    return replace(configs[0], models=models, device_key=device_key or configs[0].device_key)


def _sampling_body(
    max_tokens: int, temperature: float, top_p: float, top_k: int, seed: int | None, stop: tuple[str, ...]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
    }
    if seed is not None:
        body["seed"] = seed
    if stop:
        body["stop"] = list(stop)
    return body


device_key_opt = click.option(
    "--device-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="X25519 device private key for encrypted bundles",
)


Command = TypeVar("Command", bound=Callable[..., object])


def trust_opts(f: Command) -> Command:
    """--key / --allow-unsigned, as for deploy and verify."""
    f = click.option("--allow-unsigned", is_flag=True,
                     help="load a bundle without a valid signature (warned and recorded)")(f)
    return click.option("--key", "key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="public key (.pub) the bundle must be signed with "
                             "(default: the .pub of the default signing key)")(f)


@click.command("run")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("prompt")
@click.option("--model", help="model id when the bundle holds several")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 2))
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(0))
@click.option("--seed", type=int)
@click.option("--stop", multiple=True, help="stop string (repeatable)")
@click.option("--raw", is_flag=True, help="send PROMPT as a plain completion, without the chat template")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with text, counts and timings")
@device_key_opt
@trust_opts
def run_cmd(
    bundle: Path,
    prompt: str,
    model: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int | None,
    stop: tuple[str, ...],
    raw: bool,
    as_json: bool,
    device_key: Path | None,
    key: Path | None,
    allow_unsigned: bool,
) -> None:
    """Generate once from BUNDLE (folder, image or model dir), streaming tokens to the terminal."""
    from ..runtime.runner import generate_to

    body = _sampling_body(max_tokens, temperature, top_p, top_k, seed, stop)
    body.update({"prompt": prompt} if raw else {"messages": [{"role": "user", "content": prompt}]})
    with _runtime_errors():
        config = replace(resolve_config([bundle], device_key, Trust(key, allow_unsigned)), audit_log=None)
        write = (lambda s: None) if as_json else (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        result = generate_to(config, model, body, write)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "text": result.text,
                    "finish_reason": result.finish_reason,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "first_token_ms": None
                    if result.first_token_s is None
                    else round(result.first_token_s * 1000, 1),
                    "decode_tokens_per_s": result.decode_tokens_per_s(),
                }
            )
        )
    else:
        click.echo()


@click.command("serve")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--host", help="bind address (default from the config: 127.0.0.1)")
@click.option("--port", type=int, help="port (0 = any free port)")
@click.option("--memory-budget-mb", type=float, help="override the memory budget")
@click.option("--api-key-env", help="name of the environment variable holding the API key")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path), help="audit log path")
@device_key_opt
@trust_opts
def serve_cmd(
    bundles: tuple[Path, ...],
    host: str | None,
    port: int | None,
    memory_budget_mb: float | None,
    api_key_env: str | None,
    audit_log: Path | None,
    device_key: Path | None,
    key: Path | None,
    allow_unsigned: bool,
) -> None:
    """Serve one or more bundles/model dirs behind one OpenAI-compatible API."""
    from ..runtime.server import serve_forever

    with _runtime_errors():
        config = resolve_config(list(bundles), device_key, Trust(key, allow_unsigned)).with_overrides(
            host=host,
            port=port,
            memory_budget_mb=memory_budget_mb,
            api_key_env=api_key_env,
            audit_log=audit_log,
        )
        if allow_unsigned:
            _audit_unsigned(config, bundles)
        serve_forever(config)


@click.command("smoke")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--golden",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="golden prompts (default: BUNDLE/smoke/golden.json)",
)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="write the JSON report here")
@click.option("--url", help="test a running server instead of starting one")
@click.option("--json", "as_json", is_flag=True, help="print the whole report as JSON")
@device_key_opt
@trust_opts
def smoke_cmd(
    bundle: Path, golden: Path | None, report: Path | None, url: str | None, as_json: bool,
    device_key: Path | None, key: Path | None, allow_unsigned: bool,
) -> None:
    """Run the golden prompts and latency/throughput limits; exit 4 on failure."""
    from ..runtime.smoke import load_golden, smoke_with_config, summary_text, write_report

    trust = Trust(key, allow_unsigned)
    folder = trust.open(bundle)
    golden = golden or folder / "smoke" / "golden.json"
    if not golden.is_file():
        raise UserError(f"no golden file at {golden}", hints=["pass --golden FILE"])
    with _runtime_errors():
        config = replace(config_of([folder], device_key), audit_log=None)
        result = smoke_with_config(config, load_golden(golden), url)
    if report:
        write_report(result, report)
    click.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else summary_text(result))
    if not result["ok"]:
        raise CheckFailed(
            "smoke failed: " + "; ".join(result["summary"]["failures"]),
            hints=["the answers and timings are above" + (f" and in {report}" if report else "")],
        )


def _audit_unsigned(config: RuntimeConfig, bundles: tuple[Path, ...]) -> None:
    """--allow-unsigned also goes into the runtime's own audit log, beside the requests it serves."""
    from ..runtime.audit import AuditLog

    AuditLog(config.audit_log).record(event="accepted-unsigned", bundles=[str(b) for b in bundles],
                                      pid=os.getpid())
