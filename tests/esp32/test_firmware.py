"""Rendering the ESP-IDF project from the target; building only where idf.py exists."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_edge.errors import UserError
from llmos_edge.esp32 import firmware
from llmos_edge.esp32.images import check_images, load_flasher_args, parse_partitions
from llmos_edge.spec import load_target

from .conftest import HARNESS_DIR, PROTO_DIR
from .tiny_elf import esp32s3_app_elf


def _render(tmp_path: Path) -> firmware.FirmwareResult:
    target = load_target("esp32s3-host-offload")
    return firmware.render_firmware_project(target, tmp_path / "fw", version="1.2.3")


def test_render_takes_flash_psram_and_partitions_from_target(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no idf.py here, whatever the developer has
    res = _render(tmp_path)
    root = res.project_dir
    assert not res.built and res.images == []
    assert any(m.startswith("idf.py") for m in res.missing)
    sdk = (root / "sdkconfig.defaults").read_text()
    assert "CONFIG_ESPTOOLPY_FLASHSIZE_16MB=y" in sdk and "CONFIG_SPIRAM_MODE_OCT=y" in sdk
    assert "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y" in sdk
    parts = parse_partitions((root / "partitions.csv").read_text())
    apps = [p for p in parts if p.type == "app"]
    assert [p.subtype for p in apps] == ["ota_0", "ota_1"] and any(p.subtype == "ota" for p in parts)
    assert apps[1].offset + apps[1].size <= 16 * 1024 * 1024 and apps[0].offset % 0x10000 == 0
    assert '#define LLMOS_FW_VERSION "1.2.3"' in (root / "main" / "llmos_config.h").read_text()
    assert 'set(PROJECT_VER "1.2.3")' in (root / "CMakeLists.txt").read_text()
    # the host half (bridge unit + launcher) goes into the host bundle, not the ESP-IDF project
    assert not (root / "host").exists()
    assert not list(root.rglob("*.j2"))
    # the shipped protocol sources are the very files the host tests compile
    assert (root / "main" / "llmos_proto.c").read_bytes() == (PROTO_DIR / "llmos_proto.c").read_bytes()


def test_rendered_protocol_compiles_with_gcc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    main = _render(tmp_path).project_dir / "main"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{main}",
                    str(HARNESS_DIR / "proto_harness.c"), str(main / "llmos_proto.c"), "-o",
                    str(tmp_path / "h")], check=True)


def test_strict_undefined_names_the_template(tmp_path: Path) -> None:
    src = tmp_path / "tpl"
    src.mkdir()
    (src / "x.txt.j2").write_text("{{ nope }}")
    with pytest.raises(UserError, match=r"x.txt.j2: 'nope' is undefined"):
        firmware.render_tree(src, tmp_path / "out", {})


def test_target_without_esp32_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no \[esp32\] section"):
        firmware.render_firmware_project(load_target("rpi5"), tmp_path / "fw", version="1")


def test_build_uses_idf_py_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ESP-IDF cannot be installed here (no Xtensa toolchain in any registry): a stand-in idf.py
    script writes what `idf.py build` writes (build/flasher_args.json + images via esptool)."""
    from llmos_edge.esp32 import images as img

    app = esp32s3_app_elf(tmp_path / "app.elf")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "idf.py"
    script.write_text(f"""#!{sys.executable}
import sys
from pathlib import Path
from llmos_edge.esp32 import images as img
proj = Path(sys.argv[sys.argv.index("-C") + 1])
b = proj / "build"
b.mkdir()
(b / "app.bin").write_bytes(img.elf_to_image(Path({str(app)!r}), "esp32s3", "16MB"))
img.write_flasher_args(img.FirmwareImages("esp32s3", ((0x10000, b / "app.bin"),)), b)
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("IDF_PATH", str(tmp_path))
    res = _render(tmp_path)
    assert res.built and res.missing == [] and [p.name for p in res.images] == ["app.bin"]
    check_images(load_flasher_args(res.project_dir / "build"))
    assert img.check_image(res.images[0].read_bytes(), "esp32s3", "app").project_name == "llmos-host-offload"
