"""`python3 -m llmos_runtime serve|smoke|run --config config/runtime.json` on the device."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .config import load_config
from .errors import ApiError, RuntimeFailure


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmos_runtime", description="on-device LLM runtime")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    s.add_argument("--config", type=Path, required=True)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    k = sub.add_parser("smoke", help="run golden prompts and limits; exit 1 on failure")
    k.add_argument("--config", type=Path, required=True)
    k.add_argument("--golden", type=Path, required=True)
    k.add_argument("--report", type=Path)
    k.add_argument("--url", help="use a running server instead of starting one")
    k.add_argument("--latency-scale", type=float, default=1.0,
                   help="emulated/throttled device: first-token limit x N, tokens/s floor / N")
    r = sub.add_parser("run", help="generate once and stream to stdout")
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--model")
    r.add_argument("--max-tokens", type=int, default=128)
    r.add_argument("--temperature", type=float, default=0.0)
    r.add_argument("--raw", action="store_true", help="send PROMPT as a completion (no chat template)")
    r.add_argument("prompt")
    return p


def _serve(args: argparse.Namespace) -> int:
    from .server import serve_forever

    serve_forever(load_config(args.config).with_overrides(host=args.host, port=args.port))
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from .smoke import load_golden, smoke_with_config, write_report

    report = smoke_with_config(
        load_config(args.config), load_golden(args.golden), args.url, args.latency_scale
    )
    if args.report:
        write_report(report, args.report)
    print(json.dumps(_smoke_digest(report), indent=2))
    return 0 if report["ok"] else 1


def _smoke_digest(report: dict[str, Any]) -> dict[str, Any]:
    """What a deployer reads in its report: verdict, timing summary, and each answer (clipped)."""
    keep = ("name", "mode", "ok", "error", "missing", "first_token_ms", "tokens_per_s", "latency_ms")
    results = [{**{k: r[k] for k in keep if k in r}, "text": str(r.get("text", ""))[:160]}
               for r in report.get("results", [])]
    limits = report.get("limits") or {}
    return {"ok": report["ok"], "summary": report["summary"], "limits": limits, "results": results}


def _run(args: argparse.Namespace) -> int:
    from .runner import generate_to

    config = load_config(args.config)
    body: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if args.raw:
        body["prompt"] = args.prompt
    else:
        body["messages"] = [{"role": "user", "content": args.prompt}]
    generate_to(config, args.model, body, sys.stdout.write)
    sys.stdout.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"serve": _serve, "smoke": _smoke, "run": _run}[args.cmd](args)
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except RuntimeFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
