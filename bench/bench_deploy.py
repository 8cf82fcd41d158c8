"""Deploy speed against OpenSSH scp, side by side in one run (run by hand, as root):

    .venv/bin/python bench/bench_deploy.py [--mb 200] [--rounds 3]

Starts a private sshd on loopback (the test device from tests/deploy), then per round:
  * first deploy of a fresh bundle to an empty device root; throughput = bytes sent / transfer time
    (from the first byte to the last commit, as seen by the deploy events) and over the whole deploy;
  * `scp` of the same files to an empty folder on the same device, same key, same sshd;
  * a config-only redeploy (new version, one changed config file): bytes sent / bundle bytes.
Prints medians and ratios. Goals: deploy/scp >= 0.8; config-only redeploy sends <= 1% of the bundle.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmos_edge.bundle.keys import generate_keys  # noqa: E402
from llmos_edge.deploy.run import DeployOptions, Events, deploy_to  # noqa: E402
from llmos_edge.deploy.source import load_bundle  # noqa: E402
from tests.deploy.bundles import make_bundle, payload  # noqa: E402
from tests.deploy.devices import Device, make_client_key, start_device  # noqa: E402


class Timer(Events):
    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def phase(self, name: str) -> None:
        self.marks[name] = time.perf_counter()


def first_deploy(dev: Device, bundle: Path, pub: Path) -> tuple[float, float, int]:
    src = load_bundle(bundle, pub, allow_unsigned=False)
    timer = Timer()
    t0 = time.perf_counter()
    rep = asyncio.run(deploy_to(dev.address, src, DeployOptions(root=dev.root), dev.options(), timer))
    total = time.perf_counter() - t0
    return timer.marks["install"] - timer.marks["transfer"], total, rep.bytes_sent


def scp_same_bytes(dev: Device, bundle: Path, dest: str) -> float:
    files = sorted(str(p) for p in bundle.rglob("*") if p.is_file())
    subprocess.run(
        ["ssh", "-q", *_ssh_opts(dev), "-p", str(dev.port), f"llmos-dev@{dev.host}", "mkdir", "-p", dest],
        check=True,
    )
    t0 = time.perf_counter()
    subprocess.run(
        ["scp", "-q", *_ssh_opts(dev), "-P", str(dev.port), *files, f"llmos-dev@{dev.host}:{dest}/"],
        check=True,
    )
    return time.perf_counter() - t0


def _ssh_opts(dev: Device) -> list[str]:
    return [
        "-i",
        str(dev.identity),
        "-o",
        f"UserKnownHostsFile={dev.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]


def redeploy_config_only(dev: Device, out: Path, key: Path, pub: Path, mb: int) -> tuple[int, int]:
    b = make_bundle(
        out, "2.0.0", port=dev.runtime_port, key=key, model_size=mb * 10**6, seed=42, tag="config-change"
    )
    src = load_bundle(b, pub, allow_unsigned=False)
    rep = asyncio.run(deploy_to(dev.address, src, DeployOptions(root=dev.root), dev.options()))
    return rep.bytes_sent, rep.bytes_total


def one_round(tmp: Path, identity: Path, auth: Path, key: Path, pub: Path, mb: int) -> dict[str, float]:
    d = tmp / f"dev-{time.monotonic_ns()}"
    d.mkdir()
    dev = start_device(d, identity, auth)
    try:
        b1 = make_bundle(tmp / "b", "1.0.0", port=dev.runtime_port, key=key, model_size=mb * 10**6, seed=42)
        size = sum(p.stat().st_size for p in b1.rglob("*") if p.is_file())
        scp_s = scp_same_bytes(dev, b1, f"{dev.home}/scp")
        xfer_s, total_s, sent = first_deploy(dev, b1, pub)
        re_sent, re_total = redeploy_config_only(dev, tmp / "b", key, pub, mb)
        return {
            "scp_MBps": size / scp_s / 1e6,
            "deploy_xfer_MBps": sent / xfer_s / 1e6,
            "deploy_total_MBps": sent / total_s / 1e6,
            "redeploy_fraction": re_sent / re_total,
        }
    finally:
        dev.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    keys = Path(tempfile.mkdtemp(prefix="llmos-dev-keys-", dir="/tmp"))
    keys.chmod(0o755)
    try:
        identity, pubtext = make_client_key(keys)
        (keys / "authorized_keys").write_text(pubtext)
        (keys / "authorized_keys").chmod(0o644)
        sign_key, sign_pub = generate_keys(tmp / "sign")
        assert payload(1, 1)
        rows = [
            one_round(tmp, identity, keys / "authorized_keys", sign_key, sign_pub, args.mb)
            for _ in range(args.rounds)
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(keys, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"bundle ~{args.mb} MB, {args.rounds} rounds, medians:")
    for k, v in med.items():
        print(f"  {k:20s} {v:12.6f}   (all: {', '.join(f'{r[k]:.6f}' for r in rows)})")
    print(f"  deploy/scp transfer ratio  {med['deploy_xfer_MBps'] / med['scp_MBps']:.2f}  (goal >= 0.8)")
    print(f"  deploy/scp whole-deploy    {med['deploy_total_MBps'] / med['scp_MBps']:.2f}")
    print(f"  config-only redeploy sent  {med['redeploy_fraction'] * 100:.5f}% of the bundle  (goal <= 1%)")


if __name__ == "__main__":
    main()
