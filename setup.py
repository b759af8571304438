"""Builds libpiquant with the pinned ziglang wheel as part of the PEP 517
build. The library is loaded with ctypes, so the wheel is py3-none-<platform>."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
LIBRARY = {"win32": "bin/piquant.dll", "darwin": "lib/libpiquant.dylib"}.get(sys.platform, "lib/libpiquant.so")


class BuildWithZig(build_py):
    def run(self):
        optimize = os.environ.get("PIQUANT_OPTIMIZE", "ReleaseFast")
        subprocess.check_call(
            [sys.executable, "-m", "ziglang", "build", f"-Doptimize={optimize}", "--prefix", str(ROOT / "zig-out")],
            cwd=ROOT,
        )
        super().run()
        if not self.editable_mode:
            # An installed package carries its own copy; an editable one loads
            # the in-tree zig-out/ build, as `python -m ziglang build` leaves it.
            target = Path(self.build_lib) / "piquant"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / "zig-out" / LIBRARY, target / Path(LIBRARY).name)


class BinaryDistribution(Distribution):
    """Carries a native library: platform-specific, installed to platlib."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    def get_tag(self):
        return "py3", "none", sysconfig.get_platform().replace("-", "_").replace(".", "_")


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildWithZig, "bdist_wheel": PlatformWheel})
