"""Install root, user and service mode: read from the signed bundle, flags on top, every disagreement refused.

These are the decisions on probe answers (pure functions). The same decisions against a real sshd
are in test_defaults.py, and against a real systemd in tests/hil/test_guest_systemd.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmos_edge.deploy import install
from llmos_edge.deploy.source import BundleSource
from llmos_edge.errors import UserError
from llmos_edge.spec import list_targets


def bundle(tmp_path: Path, unit_text: str | None, target: str | None = "rpi5") -> BundleSource:
    tmp_path.mkdir(exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    if unit_text is not None:
        (tmp_path / "systemd").mkdir(exist_ok=True)
        (tmp_path / install.UNIT).write_text(unit_text)
        files[install.UNIT] = {"sha256": "0" * 64, "size": len(unit_text)}
    manifest = {"bundle_version": "1.0.0", "target": target, "files": files}
    return BundleSource(tmp_path, manifest, "{}", None, None)


UNIT_OPT = "[Service]\nUser=llmos\nExecStart=/opt/llmos/current/bin/llmos-launch\n"
ROOT_SYSTEMD = {"hostname": "pi", "uid": 0, "systemd": True, "root": "/opt/llmos"}
USER_LOGIN = {"hostname": "pi", "uid": 1000, "systemd": True, "root": "/opt/llmos"}


def test_unit_wins_then_target_then_fallback(tmp_path: Path) -> None:
    inst = install.resolve(bundle(tmp_path, UNIT_OPT), None, None)
    assert (inst.root, inst.user, inst.service) == ("/opt/llmos", "llmos", "systemd")
    home = install.resolve(bundle(tmp_path / "h", None, "host"), None, None)
    assert (home.root, home.service) == ("~/llmos", "pidfile")  # target host: install.service supervised
    assert install.resolve(bundle(tmp_path / "x", None, None), None, None).root == install.FALLBACK_ROOT
    over = install.resolve(bundle(tmp_path, UNIT_OPT), "/srv/llm", "pidfile")
    assert (over.root, over.service, over.root_from) == ("/srv/llm", "pidfile", "--root")


def test_percent_h_unit_reads_as_home(tmp_path: Path) -> None:
    inst = install.resolve(bundle(tmp_path, "User=me\nExecStart=%h/llmos/current/bin/llmos-launch\n"),
                           None, None)
    assert inst.root == "~/llmos"
    with pytest.raises(UserError, match="relative to the service user's home"):
        install.check_install({**ROOT_SYSTEMD, "root": "/root/llmos"}, inst)


@pytest.mark.parametrize("root", ["../etc", "/opt/../etc", "/opt/llmos/%i", "relative/x", "/opt/a b",
                                  "/opt/\x1b[31m", "~root/x", "/opt/./x"])
def test_odd_unit_roots_are_refused(tmp_path: Path, root: str) -> None:
    with pytest.raises(UserError, match="with a plain install root"):
        install.resolve(bundle(tmp_path, f"User=x\nExecStart={root}/current/bin/llmos-launch\n"), None, None)


@pytest.mark.parametrize("start", ["", "/usr/bin/python3 -m evil", "/opt/llmos/current/bin/llmos-launch --x"])
def test_a_unit_that_starts_something_else_is_refused(tmp_path: Path, start: str) -> None:
    with pytest.raises(UserError, match="with a plain install root"):
        install.resolve(bundle(tmp_path, f"User=x\nExecStart={start}\n"), None, None)


def test_root_systemd_login_matches_the_unit(tmp_path: Path) -> None:
    b = bundle(tmp_path, UNIT_OPT)
    assert install.check_install(ROOT_SYSTEMD, install.resolve(b, None, None)) == []
    moved = install.resolve(b, "/srv/llm", None)
    with pytest.raises(UserError, match="does not look"):
        install.check_install({**ROOT_SYSTEMD, "root": "/srv/llm"}, moved)
    with pytest.raises(UserError, match="the service mode is pidfile"):
        install.check_install(ROOT_SYSTEMD, install.resolve(b, None, "pidfile"))
    with pytest.raises(UserError, match=r"has no systemd/llmos-edge.service"):
        install.check_install(ROOT_SYSTEMD, install.resolve(bundle(tmp_path / "n", None), None, "systemd"))


def test_non_root_login_falls_back_to_pidfile_and_says_so(tmp_path: Path) -> None:
    inst = install.resolve(bundle(tmp_path, UNIT_OPT), None, None)
    notes = install.check_install(USER_LOGIN, inst)
    assert notes and "login is not root" in notes[0] and "pidfile" in notes[0]
    with pytest.raises(UserError, match="--service systemd, but the login is not root"):
        install.check_install(USER_LOGIN, install.resolve(bundle(tmp_path, UNIT_OPT), None, "systemd"))
    install.check_writable("pi", inst, "1 /opt/llmos\n")
    with pytest.raises(UserError, match="cannot write the install root /opt/llmos"):
        install.check_writable("pi", inst, "0 /opt/llmos\n")
    with pytest.raises(UserError, match="cannot write the install root /opt/llmos"):
        install.check_writable("pi", inst, "")  # no answer (the check itself failed) is a no


def test_every_shipped_target_root_is_searched_by_device_commands() -> None:
    """status/logs/rollback/releases without --root look in DEVICE_ROOTS: no target may fall outside."""
    roots = {t.install.root for t in list_targets()}
    assert roots <= set(install.DEVICE_ROOTS), roots


def test_inventory_vars_override_root_and_service(tmp_path: Path) -> None:
    from llmos_edge.deploy.fleet import FleetDevice, device_options
    from llmos_edge.deploy.run import DeployOptions
    from llmos_edge.transports.ssh import SshOptions

    base = DeployOptions()
    assert base.root is None and base.service is None  # the bundle decides unless told otherwise
    opts, _ = device_options(FleetDevice("pi-1", "pi@h", "rpi5", {"root": "/srv/llm", "service": "pidfile"}),
                             base, SshOptions())
    assert (opts.root, opts.service) == ("/srv/llm", "pidfile")
    same, _ = device_options(FleetDevice("pi-2", "pi@h", "rpi5", {}), base, SshOptions())
    assert (same.root, same.service) == (None, None)
