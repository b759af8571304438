"""Runs the Zig unit tests (`zig build test`) of every variant this CPU runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_zig_build_test():
    r = subprocess.run([sys.executable, "-m", "ziglang", "build", "test", "--summary", "all"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tests passed" in r.stderr + r.stdout
