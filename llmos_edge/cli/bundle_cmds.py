"""`keys generate`, `verify`, `inspect`: thin commands over llmos_edge.bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def keys() -> None:
    """Signing keys (Ed25519) and device keys (X25519, for --encrypt-for)."""


@keys.command("generate")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="PREFIX: writes PREFIX.key (private, 0600) and PREFIX.pub")
@click.option("--device", is_flag=True, help="an X25519 device key for encrypted bundles")
@click.option("--force", is_flag=True, help="overwrite existing key files")
def generate(out: Path, device: bool, force: bool) -> None:
    """Create a key pair."""
    from ..bundle.keys import generate_keys

    priv, pub = generate_keys(out, device=device, force=force)
    kind = "device (X25519)" if device else "signing (Ed25519)"
    click.echo(f"{kind} key: {priv} (keep private)\npublic key: {pub}")


@click.command("verify")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--key", "key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="public key (.pub) the bundle must be signed with "
                   "(default: the .pub of the default signing key)")
@click.option("--allow-unsigned", is_flag=True,
              help="accept a bundle without a verifiable signature (recorded)")
def verify_cmd(bundle: Path, key: Path | None, allow_unsigned: bool) -> None:
    """Check a bundle's signature and every file's hash."""
    from ..bundle.keyplace import default_public_key
    from ..bundle.verify import verify_bundle

    m = verify_bundle(bundle, key or default_public_key(), allow_unsigned=allow_unsigned)
    if m.unsigned_allowed:
        click.echo("WARNING: signature NOT verified; accepted because of --allow-unsigned (recorded)",
                   err=True)
    click.echo(f"OK {m.name} {m.version}: {len(m.files)} files match; {m.trust}")


@click.command("inspect")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the whole manifest as JSON")
def inspect_cmd(bundle: Path, as_json: bool) -> None:
    """Show what a bundle holds (does not verify it: use `verify`)."""
    from ..bundle.inspect import read_manifest, summary_lines

    raw = read_manifest(bundle)
    click.echo(json.dumps(raw, indent=2, sort_keys=True) if as_json else "\n".join(summary_lines(raw)))
