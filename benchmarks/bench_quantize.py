"""Side-by-side medians of float32 → uint8 per-tensor quantization (nearest
and stochastic), fake quantization and parameters: piquant against torch, in
one process run.

    python benchmarks/bench_quantize.py [--numel 27264000] [--repeats 15] [--isa-sweep]
        [--pi-quant-python /path/to/venv/bin/python]

--isa-sweep adds piquant's quantize (into out=) for every ISA variant this
CPU runs, with 1 and 2 threads. --pi-quant-python runs pi-quant's quantize
(nearest and stochastic) in that interpreter's environment, from this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import piquant


def median_time(fn, repeats: int) -> float:
    fn()  # warm up: page faults, pool start
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--numel", type=int, default=27_264_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--isa-sweep", action="store_true")
    ap.add_argument("--pi-quant-python", help="python of a virtual environment with pypiquant installed")
    args = ap.parse_args()
    torch.set_num_threads(piquant.Context.get().num_threads)
    x = torch.randn(args.numel)
    scale, zp = piquant.compute_params(x, "uint8")
    out = torch.empty(args.numel, dtype=torch.uint8)
    fake_out = torch.empty_like(x)
    rows = {
        "piquant.quantize (new result)": lambda: piquant.quantize(x, "uint8", scale=scale, zero_point=zp),
        "piquant.quantize (out=)": lambda: piquant.quantize(x, "uint8", scale=scale, zero_point=zp, out=out),
        "piquant.quantize stochastic (out=)": lambda: piquant.quantize(x, "uint8", scale=scale, zero_point=zp, out=out, round_mode="stochastic"),
        "piquant.fake_quantize (out=)": lambda: piquant.fake_quantize(x, "uint8", scale=scale, zero_point=zp, out=fake_out),
        "torch.fake_quantize_per_tensor_affine": lambda: torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255),
        "torch.quantize_per_tensor": lambda: torch.quantize_per_tensor(x, scale, zp, torch.quint8),
        "piquant.compute_params": lambda: piquant.compute_params(x, "uint8"),
        "torch.aminmax": lambda: torch.aminmax(x),
    }
    if args.isa_sweep:
        for isa in piquant.info()["available_isas"]:
            for threads in (1, 2):
                ctx = piquant.Context(threads, isa=isa)
                rows[f"piquant {isa} {threads} thread(s) (out=)"] = (
                    lambda ctx=ctx: piquant.quantize(x, "uint8", scale=scale, zero_point=zp, out=out, ctx=ctx)
                )
    info = piquant.info()
    print(f"numel={args.numel} isa={info['isa']} threads={info['num_threads']} torch threads={torch.get_num_threads()} repeats={args.repeats}")
    results = {name: median_time(fn, args.repeats) for name, fn in rows.items()}
    if args.pi_quant_python:
        peer = Path(__file__).with_name("peer_piquant.py")
        cmd = [args.pi_quant_python, str(peer), str(args.numel), str(args.repeats), str(piquant.Context.get().num_threads)]
        results |= json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    base = results["torch.quantize_per_tensor"]
    for name, t in results.items():
        print(f"{name:34s} median {t * 1e3:8.2f} ms   torch.quantize_per_tensor / this = {base / t:5.2f}x")


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    main()
