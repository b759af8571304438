"""The C header and the example program, built with the system C compiler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from piquant import _backend

ROOT = Path(__file__).resolve().parent.parent
CC = shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler on PATH")


def test_header_is_strict_c99_and_cxx():
    header = ROOT / "zig" / "include" / "piquant.h"
    subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only", "-x", "c", str(header)], check=True)
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx:
        subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only", "-x", "c++", str(header)], check=True)


def test_example_program_builds_and_runs(tmp_path):
    lib = Path(_backend.library_path())
    exe = tmp_path / "quantize_example"
    subprocess.run(
        [CC, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I", str(ROOT / "zig" / "include"), str(ROOT / "examples" / "quantize.c"),
         str(lib), f"-Wl,-rpath,{lib.parent}", "-lm", "-o", str(exe)],
        check=True,
    )
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "negative scale rejected: scale:" in r.stdout
