"""The platforms piquant's library is built for: Zig target → (library path
in the install prefix, wheel platform tag). Read by setup.py (by path, so the
build imports nothing of the package) and by the tests.

Linux builds link glibc 2.28 at most (Zig's -gnu default is older), hence
manylinux_2_28; the tests check it.
"""

TARGETS = {
    "x86_64-linux-gnu": ("lib/libpiquant.so", "manylinux_2_28_x86_64"),
    "aarch64-linux-gnu": ("lib/libpiquant.so", "manylinux_2_28_aarch64"),
    "x86_64-macos": ("lib/libpiquant.dylib", "macosx_10_13_x86_64"),
    "aarch64-macos": ("lib/libpiquant.dylib", "macosx_11_0_arm64"),
    "x86_64-windows-gnu": ("bin/piquant.dll", "win_amd64"),
}


def host_target() -> str:
    """The target of TARGETS a build on this machine uses without
    PIQUANT_TARGET: its own row on glibc Linux (so the library needs glibc
    2.28 at most), else "" for Zig's `native`. setup.py's build, the platform
    tests' build and `zig build test` all use it, so Zig's cache compiles the
    kernel variants once for all three."""
    import platform
    import sys

    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return ""
    target = f"{platform.machine()}-linux-gnu"
    return target if target in TARGETS else ""
