"""Builds libpiquant with the pinned ziglang wheel as part of the PEP 517
build. The library is loaded with ctypes, so the wheel is py3-none-<platform>.

PIQUANT_TARGET cross-builds for another platform from this machine, e.g.

    PIQUANT_TARGET=aarch64-macos pip wheel --no-deps -w dist .

with one of the targets in piquant/_platforms.py; the wheel carries that platform's
library and tag."""

import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

PLATFORMS = runpy.run_path(str(ROOT / "piquant" / "_platforms.py"))
TARGETS = PLATFORMS["TARGETS"]
TARGET = os.environ.get("PIQUANT_TARGET", "")
if TARGET and TARGET not in TARGETS:
    sys.exit(f"PIQUANT_TARGET: expected one of {', '.join(TARGETS)}, got {TARGET!r}")
BUILD_TARGET = TARGET or PLATFORMS["host_target"]()
PREFIX = ROOT / ("zig-out" if not TARGET else f"zig-out-{TARGET}")
LIBRARY = TARGETS[TARGET][0] if TARGET else {"win32": "bin/piquant.dll", "darwin": "lib/libpiquant.dylib"}.get(sys.platform, "lib/libpiquant.so")


class BuildWithZig(build_py):
    def run(self):
        optimize = os.environ.get("PIQUANT_OPTIMIZE", "ReleaseFast")
        target = [f"-Dtarget={BUILD_TARGET}"] if BUILD_TARGET else []
        subprocess.check_call(
            [sys.executable, "-m", "ziglang", "build", f"-Doptimize={optimize}", *target, "--prefix", str(PREFIX)],
            cwd=ROOT,
        )
        super().run()
        if not self.editable_mode:
            # An installed package carries its own copy; an editable one loads
            # the in-tree zig-out/ build, as `python -m ziglang build` leaves it.
            package = Path(self.build_lib) / "piquant"
            package.mkdir(parents=True, exist_ok=True)
            for stale in ("libpiquant.so", "libpiquant.dylib", "piquant.dll"):  # from a build for another target
                (package / stale).unlink(missing_ok=True)
            shutil.copy2(PREFIX / LIBRARY, package / Path(LIBRARY).name)


class BinaryDistribution(Distribution):
    """Carries a native library: platform-specific, installed to platlib."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    def get_tag(self):
        if TARGET:
            return "py3", "none", TARGETS[TARGET][1]
        return "py3", "none", sysconfig.get_platform().replace("-", "_").replace(".", "_")


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildWithZig, "bdist_wheel": PlatformWheel})
