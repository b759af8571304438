"""Every platform from this machine: the library cross-builds for the five
targets with the right file names and formats, golden vectors from the numpy
reference pass on every x86-64 variant here and on aarch64 (generic and
Neon) under qemu, and wheels for other platforms carry their tags.

qemu-aarch64 and an aarch64 glibc (Debian: qemu-user, libc6-arm64-cross) are
needed for the aarch64 run: skipped where missing unless
PIQUANT_REQUIRE_TOOLS=1 (as in .ci/run).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from piquant._platforms import TARGETS

ROOT = Path(__file__).resolve().parents[1]

ZIG = [sys.executable, "-m", "ziglang"]
# Targets whose library is only checked for its name, format and wheel tag are built in Debug:
# that compiles every line for the target at a quarter of ReleaseFast's CPU time (184 s against
# 723 s for x86_64-macos). The Linux targets are built as shipped: glibc versions and the
# aarch64 golden vectors are checked on them. On x86-64 glibc Linux, x86_64-linux-gnu is the build
# `pip install` made (setup.py), which Zig's cache serves again here.
RELEASE_CHECKED = {"x86_64-linux-gnu", "aarch64-linux-gnu"}


def optimize_mode(target: str) -> str:
    return "ReleaseFast" if target in RELEASE_CHECKED else "Debug"
ARCH = {"x86_64": ("ELF", 62, "Mach-O", 0x01000007, "PE", 0x8664), "aarch64": ("ELF", 183, "Mach-O", 0x0100000C, "PE", 0xAA64)}


def binary_kind(path: Path) -> tuple[str, int]:
    """(format, machine) of a shared library, from its header."""
    b = path.read_bytes()[:4096]
    if b[:4] == b"\x7fELF":
        return "ELF", struct.unpack_from("<H", b, 18)[0]
    if b[:4] == b"\xcf\xfa\xed\xfe":
        return "Mach-O", struct.unpack_from("<I", b, 4)[0]
    if b[:2] == b"MZ":
        pe = struct.unpack_from("<I", b, 0x3C)[0]
        assert b[pe : pe + 4] == b"PE\0\0"
        return "PE", struct.unpack_from("<H", b, pe + 4)[0]
    return "?", 0


@pytest.fixture(scope="module")
def cross_builds(tmp_path_factory):
    out = tmp_path_factory.mktemp("targets")
    built = {}
    for target, (library, _tag) in TARGETS.items():
        prefix = out / target
        subprocess.run([*ZIG, "build", f"-Dtarget={target}", f"-Doptimize={optimize_mode(target)}", "--prefix", str(prefix)],
                       cwd=ROOT, check=True, capture_output=True, timeout=1800)
        built[target] = prefix / library
    return built


def test_every_target_builds_with_its_name_and_format(cross_builds):
    for target, lib in cross_builds.items():
        assert lib.exists(), target
        arch = target.split("-")[0]
        fmt, machine = binary_kind(lib)
        want = {"linux": 0, "macos": 2, "windows": 4}[target.split("-")[1]]
        assert (fmt, machine) == ARCH[arch][want : want + 2], (target, fmt, hex(machine))
        if "linux" in target and shutil.which("objdump"):
            syms = subprocess.run(["objdump", "-T", str(lib)], capture_output=True, text=True).stdout
            newest = max((tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([0-9.]+)", syms)), default=(0,))
            assert newest <= (2, 28), f"{target} needs glibc {newest}: its manylinux_2_28 tag would be wrong"


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    path = tmp_path_factory.mktemp("golden") / "golden.bin"
    r = subprocess.run([sys.executable, str(ROOT / "tests/golden/make_vectors.py"), str(path)], capture_output=True, text=True, check=True)
    return path, int(r.stdout.strip())


def check_output(stdout: str, count: int, isas: set[str]) -> None:
    runs = [line.split() for line in stdout.strip().splitlines()]
    assert {r[0] for r in runs} == isas, stdout
    for isa, threads, n, bad in runs:
        assert (int(n), int(bad)) == (count, 0), f"{isa} with {threads} threads: {bad} of {n} vectors differ"


def test_golden_vectors_on_every_x86_variant(vectors, tmp_path):
    import piquant

    path, count = vectors
    lib = Path(piquant._backend.library_path())
    exe = tmp_path / "check"
    subprocess.run(["gcc", "-std=c99", "-O1", f"-I{ROOT / 'zig/include'}", str(ROOT / "tests/golden/check.c"), f"-L{lib.parent}",
                    "-lpiquant", f"-Wl,-rpath,{lib.parent}", "-o", str(exe)], check=True)
    r = subprocess.run([str(exe), str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    check_output(r.stdout, count, set(piquant.info()["available_isas"]))


def test_aarch64_generic_and_neon_under_qemu(cross_builds, vectors, tmp_path):
    qemu = shutil.which("qemu-aarch64")
    sysroot = Path("/usr/aarch64-linux-gnu")
    if qemu is None or not sysroot.exists():
        if os.environ.get("PIQUANT_REQUIRE_TOOLS"):
            pytest.fail("qemu-aarch64 and an aarch64 glibc (qemu-user, libc6-arm64-cross) are required")
        pytest.skip("qemu-user or libc6-arm64-cross is not installed")
    lib = cross_builds["aarch64-linux-gnu"]
    path, count = vectors
    env = {**os.environ, "QEMU_LD_PREFIX": str(sysroot), "LD_LIBRARY_PATH": str(lib.parent)}
    for source, args in (("tests/golden/check.c", [str(path)]), ("examples/quantize.c", [])):
        exe = tmp_path / Path(source).stem
        subprocess.run([*ZIG, "cc", "-target", "aarch64-linux-gnu", "-std=c99", "-O1", f"-I{ROOT / 'zig/include'}", str(ROOT / source),
                        f"-L{lib.parent}", "-lpiquant", "-lm", "-o", str(exe)], check=True, capture_output=True, timeout=300)
        r = subprocess.run([qemu, str(exe), *args], capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, f"{source}: {r.stdout}{r.stderr}"
        if source.endswith("check.c"):
            check_output(r.stdout, count, {"generic", "neon"})
        else:
            assert "isa neon" in r.stdout and "negative scale rejected" in r.stdout, r.stdout


@pytest.mark.parametrize("target", ["aarch64-macos", "x86_64-windows-gnu"])
def test_wheel_for_another_platform(cross_builds, target, tmp_path):
    env = {**os.environ, "PIQUANT_TARGET": target, "PIQUANT_OPTIMIZE": optimize_mode(target)}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=900, env=env)
    (wheel,) = tmp_path.glob("*.whl")
    library, tag = TARGETS[target]
    assert wheel.name.endswith(f"-py3-none-{tag}.whl"), wheel.name
    names = [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("piquant/") and n.rsplit("/", 1)[1].startswith(("libpiquant", "piquant."))]
    assert names == [f"piquant/{Path(library).name}"], names
