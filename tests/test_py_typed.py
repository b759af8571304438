"""PEP 561: the package says it is typed, and the build ships the marker
(tests/test_packaging.py builds the wheel; this checks what puts it there)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import piquant

ROOT = Path(__file__).resolve().parent.parent


def test_py_typed_marker_is_in_the_package():
    assert (Path(piquant.__file__).parent / "py.typed").is_file()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_build_ships_py_typed():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in config["package-data"]["piquant"]
    assert "piquant" in config["packages"]
