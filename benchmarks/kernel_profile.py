"""Issue 15's kernel profile: per ISA variant and row, the instructions one
thread executes per 16 elements and the in-cache ns per element (median over
batches), through the C ABI with no Python in the loop; torch's one-thread
times for the rows it has, through its Python call.

    python benchmarks/kernel_profile.py [--n 65536] [--reps 31] [--no-count]

The count is the slope between one call on `COUNT_N` elements and one on
twice as many, so the call's fixed cost drops out: callgrind counts it, and
for avx512f, which valgrind cannot run, gdb single-steps the two calls
(a few seconds a row). Needs a C compiler, valgrind and gdb.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import timeit
import warnings
from pathlib import Path

ROWS = ("quantize_f32_u8", "quantize_f32_i8", "stochastic_f32_u8", "quantize_bf16_u8",
        "quantize_f32_float8_e4m3fn", "quantize_f32_float8_e5m2",
        "dequantize_u8_f32", "dequantize_u8_f32_add", "dequantize_u8_bf16",
        "mx_f32_mxfp8_e4m3", "mx_f32_mxfp8_e5m2", "mx_f32_mxfp6_e2m3", "mx_f32_mxfp6_e3m2", "mx_f32_mxfp4",
        "mx_f32_mxint8", "mx_f32_nvfp4")
ROOT = Path(__file__).resolve().parent.parent


def build_driver(lib: Path, work: Path) -> Path:
    exe = work / "kernel_profile"
    subprocess.run(["cc", "-O2", "-std=c99", "-D_POSIX_C_SOURCE=199309L", f"-I{ROOT / 'zig' / 'include'}",
                    str(ROOT / "benchmarks" / "kernel_profile.c"), "-o", str(exe), f"-L{lib.parent}", "-lpiquant",
                    f"-Wl,-rpath,{lib.parent}"], check=True)
    return exe


COUNT_N = 4096
ENTRY_POINTS = ("piquant_quantize", "piquant_dequantize", "piquant_mx_quantize")

# Single-steps each call of an entry point to its return, counting
# instructions (callees included, as callgrind's toggle counts them).
GDB_COUNTER = f"""
import gdb
gdb.execute("set pagination off")
for name in {ENTRY_POINTS!r}:
    gdb.execute("break " + name, to_string=True)
gdb.execute("run", to_string=True)
total = 0
while gdb.selected_inferior().pid:
    frame = gdb.newest_frame()
    while frame.type() == gdb.INLINE_FRAME:  # a breakpoint may land in code inlined at the entry
        frame = frame.older()
    back = frame.older().pc()
    while gdb.newest_frame().pc() != back:
        gdb.execute("stepi", to_string=True)
        total += 1
    gdb.execute("continue", to_string=True)
print("instructions", total)
"""


def call_instructions(exe: Path, isa: str, row: str, n: int, work: Path) -> int:
    """Instructions of one call on n elements, the entry point's callees included."""
    args = [str(exe), isa, row, str(n), "1", "count"]
    if isa == "avx512f":
        script = work / "count.py"
        script.write_text(GDB_COUNTER)
        done = subprocess.run(["gdb", "-q", "-batch", "-x", str(script), "--args", *args],
                              check=True, capture_output=True, text=True)
        return int(re.search(r"^instructions (\d+)$", done.stdout, re.M).group(1))
    out = work / f"cg.{isa}.{row}.{n}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no",
                    *(f"--toggle-collect={name}" for name in ENTRY_POINTS), *args], check=True, capture_output=True)
    return int(re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M).group(1))


def instructions_per_16(exe: Path, isa: str, row: str, work: Path) -> float:
    extra = call_instructions(exe, isa, row, 2 * COUNT_N, work) - call_instructions(exe, isa, row, COUNT_N, work)
    return extra * 16 / COUNT_N


def ns_per_element(exe: Path, isa: str, row: str, n: int, reps: int) -> float:
    done = subprocess.run([str(exe), isa, row, str(n), str(reps), "time"], check=True, capture_output=True, text=True)
    return float(done.stdout)


def torch_ns_per_element(n: int, reps: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)  # the deprecation of quantized tensors
    x = torch.rand(n) * 2 - 1
    q = torch.quantize_per_tensor(x, 0.01, 128, torch.quint8)
    calls = {
        "quantize_f32_u8": lambda: torch.quantize_per_tensor(x, 0.01, 128, torch.quint8),
        "quantize_f32_i8": lambda: torch.quantize_per_tensor(x, 0.01, 0, torch.qint8),
        "dequantize_u8_f32": q.dequantize,
    }
    result = {}
    for row, call in calls.items():
        number = max(1, 200_000 // n)
        times = timeit.repeat(call, number=number, repeat=reps)
        result[row] = statistics.median(times) / (number * n) * 1e9
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--reps", type=int, default=31)
    parser.add_argument("--no-count", action="store_true", help="times only (no valgrind)")
    parser.add_argument("--rows", nargs="+", metavar="TEXT", help="only rows whose name contains one of these")
    args = parser.parse_args(argv)

    import piquant
    from piquant import _native

    _, lib = _native.load()
    isas = [name for name in ("generic", "sse42", "avx2", "avx512f") if name in piquant.info()["available_isas"]]
    count = not args.no_count and shutil.which("valgrind") is not None and shutil.which("gdb") is not None
    torch_ns = torch_ns_per_element(args.n, args.reps)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_driver(lib, Path(tmp))
        print(f"1 thread; instructions per 16 elements (slope over {COUNT_N} more) · ns per element at {args.n} (median)")
        print("| row | " + " | ".join(isas) + " | torch ns/el |")
        print("| --- |" + " --- |" * (len(isas) + 1))
        for row in ROWS:
            if args.rows and not any(t in row for t in args.rows):
                continue
            cells = []
            for isa in isas:
                ins = f"{instructions_per_16(exe, isa, row, Path(tmp)):.1f}" if count else "–"
                cells.append(f"{ins} · {ns_per_element(exe, isa, row, args.n, args.reps):.4f}")
            tn = torch_ns.get(row)
            print(f"| {row} | " + " | ".join(cells) + f" | {'–' if tn is None else f'{tn:.4f}'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
