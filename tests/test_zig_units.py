"""Runs the Zig unit tests (`zig build test`) of every variant this CPU runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from piquant._platforms import host_target

ROOT = Path(__file__).resolve().parent.parent


def test_zig_build_test():
    # The target of the installed build: the ABI's tests link the kernel objects Zig's cache already holds.
    host = host_target()
    target = [f"-Dtarget={host}"] if host else []
    r = subprocess.run([sys.executable, "-m", "ziglang", "build", "test", *target, "--summary", "all"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tests passed" in r.stderr + r.stdout
