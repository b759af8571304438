"""The wheel: platform-tagged but Python-agnostic, with the library inside."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_is_py3_none_platform_and_carries_the_library(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("piquant-") and "-py3-none-" in wheel.name and not wheel.name.endswith("-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("piquant/libpiquant.") for n in names)
    assert "piquant_reference/__init__.py" in names
