"""Issue 15's kernel profile: per ISA variant and row, the instructions one
thread executes per 16 elements (callgrind, deterministic) and the in-cache
ns per element (median over batches), through the C ABI with no Python in the
loop; torch's one-thread times for the rows it has, through its Python call.

    python benchmarks/kernel_profile.py [--n 65536] [--reps 31] [--no-count]

Needs a C compiler and valgrind (for the counts); valgrind cannot run AVX-512,
so that variant gets times only, where the CPU has it.
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


def instructions_per_16(exe: Path, isa: str, row: str, n: int, work: Path) -> float:
    out = work / f"cg.{isa}.{row}"
    calls = 4
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no",
                    "--toggle-collect=piquant_quantize", "--toggle-collect=piquant_dequantize",
                    "--toggle-collect=piquant_mx_quantize",
                    str(exe), isa, row, str(n), str(calls), "count"], check=True, capture_output=True)
    total = int(re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M).group(1))
    return total * 16 / (n * calls)


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
    count = not args.no_count and shutil.which("valgrind") is not None
    torch_ns = torch_ns_per_element(args.n, args.reps)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_driver(lib, Path(tmp))
        print(f"{args.n} elements, 1 thread; instructions per 16 elements (callgrind) | ns per element (median)")
        print("| row | " + " | ".join(isas) + " | torch ns/el |")
        print("| --- |" + " --- |" * (len(isas) + 1))
        for row in ROWS:
            if args.rows and not any(t in row for t in args.rows):
                continue
            cells = []
            for isa in isas:
                ins = (f"{instructions_per_16(exe, isa, row, args.n, Path(tmp)):.1f}"
                       if count and isa != "avx512f" else "–")
                cells.append(f"{ins} · {ns_per_element(exe, isa, row, args.n, args.reps):.4f}")
            tn = torch_ns.get(row)
            print(f"| {row} | " + " | ".join(cells) + f" | {'–' if tn is None else f'{tn:.4f}'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
