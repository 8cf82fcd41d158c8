"""One command for the QEMU hardware-in-the-loop path, each step timed (fresh vs cached).

  python -m ci.hil image [--refresh]     rootfs (debootstrap) + kernel/initrd + disk, cached on inputs
  python -m ci.hil boot                  boot the guest, log in over ssh, stop it (QMP quit)
  python -m ci.hil all [--apt] [--bundle IMG --pubkey PUB]
        from a fresh machine: apt packages, image, the rpi5 SmolLM2 bundle (`llmos-edge build`, unless
        --bundle), boot, the real `llmos-edge deploy` with the bundle's offline wheels, the on-device
        smoke test under emulation, status, stop. Exit 0 only if the smoke test passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmos_edge.errors import CheckFailed, LlmosError

from .devices import HilDevice
from .qemu import deploy as hil
from .qemu.cache import Timings
from .qemu.guest import QemuGuest
from .qemu.image import GuestImage, build_image
from .qemu.tools import APT_PACKAGES, run


def _apt(t: Timings) -> None:
    with t.step("apt-get install"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=600", *APT_PACKAGES.split()],
            env=env, timeout=1800, what="apt-get install")


def _build_bundle(work: Path, t: Timings) -> tuple[Path, Path]:
    from llmos_edge.bundle import generate_keys

    key, pub = generate_keys(work / "ci-hil-sign", force=True)
    with t.step("build rpi5 smollm2 bundle"):
        proc = hil.llmos_edge("build", "--target", "rpi5", "--recipe", "smollm2-135m-instruct",
                              "--out", str(work / "bundle"), "--key", str(key), "--json", timeout=7200)
    if proc.returncode != 0:
        raise CheckFailed(f"llmos-edge build failed ({proc.returncode}): {proc.stderr[-2000:]}")
    image = next((work / "bundle").rglob("*.tar.gz"))
    return image, pub


def _boot(image: GuestImage, work: Path, t: Timings, init: str) -> QemuGuest:
    guest = QemuGuest(image, work / "vm", init=init)
    guest.start()
    t.add("boot to ssh login", guest.boot_seconds, False)
    return guest


def cmd_image(args: argparse.Namespace, t: Timings) -> int:
    img = build_image(t, refresh=args.refresh)
    print(f"disk   {img.disk}\nkernel {img.kernel}\ninitrd {img.initrd}")
    return 0


def cmd_boot(args: argparse.Namespace, t: Timings) -> int:
    img = build_image(t)
    with tempfile.TemporaryDirectory(prefix="llmos-hil-", dir="/tmp") as tmp:
        guest = _boot(img, Path(tmp), t, args.init)
        try:
            with t.step("ssh command"):
                print(guest.ssh(["uname", "-a"]).stdout.strip())
        finally:
            with t.step("stop (QMP quit)"):
                guest.stop()
    return 0


def cmd_all(args: argparse.Namespace, t: Timings) -> int:
    if args.apt:
        _apt(t)
    img = build_image(t)
    work = Path(tempfile.mkdtemp(prefix="llmos-hil-", dir="/tmp"))
    try:
        bundle, pub = (args.bundle, args.pubkey) if args.bundle else _build_bundle(work, t)
        guest = _boot(img, work, t, args.init)
        try:
            dev = HilDevice("qemu-aarch64", f"{guest.user}@{guest.host}:{guest.port}",
                            guest.copy_key(work / "id_ed25519"), guest.known_hosts, "rpi5")
            clock = hil.PhaseClock()
            with t.step("deploy + on-device smoke"):
                outcome = hil.deploy(dev, bundle, pub, smoke_timeout=args.smoke_timeout, clock=clock)
            for name, seconds in clock.phases:
                t.add(f"  deploy: {name}", seconds, False)
            print(outcome.text[-4000:])
            report = dict(outcome.report or {})
            smoke = report.pop("smoke", "")
            print(json.dumps(report, indent=2, default=str))
            print(f"on-device smoke test (aarch64, emulated):\n{smoke}")
            with t.step("status"):
                status = hil.status(dev)
            print(json.dumps(status, indent=2, default=str))
        finally:
            with t.step("stop (QMP quit)"):
                guest.stop()
        return 0 if outcome.rc == 0 and status.get("current") else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ci.hil", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timings-json", type=Path, help="also write the step timings here")
    p.add_argument("--init", choices=["systemd", "fast"], default="systemd",
                   help="guest PID 1: systemd (as on a device) or a minimal init (sshd in seconds)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("image").add_argument("--refresh", action="store_true", help="rebuild every cached step")
    sub.add_parser("boot")
    a = sub.add_parser("all")
    a.add_argument("--apt", action="store_true", help="apt-get install the QEMU tools first")
    a.add_argument("--bundle", type=Path, help="deploy this bundle instead of building rpi5 SmolLM2")
    a.add_argument("--pubkey", type=Path, help="public key that signed --bundle")
    a.add_argument("--smoke-timeout", type=float, default=1800)
    args = p.parse_args(argv)
    if getattr(args, "bundle", None) and not args.pubkey:
        p.error("--bundle needs --pubkey")
    t = Timings()
    t0 = time.monotonic()
    try:
        rc = {"image": cmd_image, "boot": cmd_boot, "all": cmd_all}[args.cmd](args, t)
    except LlmosError as exc:
        print(exc.render(), file=sys.stderr)
        rc = exc.exit_code
    except subprocess.TimeoutExpired as exc:
        print(f"error: timed out: {exc}", file=sys.stderr)
        rc = 3
    print(f"\nstep timings ({time.monotonic() - t0:.0f} s wall):\n{t.table()}")
    if args.timings_json:
        args.timings_json.write_text(json.dumps(t.as_json(), indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
