"""Benchmark peer: pi-quant (PyPI ``pypiquant``), run by ``python -m piquant
bench`` inside pi-quant's own virtual environment, where ``piquant`` is
pi-quant. Not imported by piquant itself; run as ``<venv python> -I this_file``
(-I keeps this directory off sys.path).

Reads {"threads", "budget", "min_repeats", "cases": [{"row", "op", "float_dtype",
"quant_dtype", "round_mode", "reduce", "n"}]} as JSON on stdin and prints
{"version", "medians": [seconds or null], "skipped": [reason or null]}.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

import piquant

DTYPES = {"float32": "F32", "bfloat16": "BF16", "uint2": "UINT2", "uint4": "UINT4", "uint8": "UINT8"}


def median_time(fn: Callable[[], Any], budget: float, min_repeats: int) -> float:
    # The same as piquant/_bench.py's, repeated on purpose: in pi-quant's
    # environment `import piquant` is pi-quant, so this file imports nothing of ours.
    fn()
    t = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t, 1e-7)
    times = []
    for _ in range(max(min_repeats, min(2000, int(budget / once)))):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def storage(dtype: str, n: int) -> np.ndarray:
    if dtype == "float32":
        return np.empty(n, np.float32)
    if dtype == "bfloat16":
        return np.empty(n, np.uint16)
    bits = {"uint2": 2, "uint4": 4, "uint8": 8}[dtype]
    return np.empty((n * bits + 7) // 8, np.uint8)


def huge_pages(enabled: bool) -> None:
    """Whether numpy asks for transparent huge pages on large arrays: off for
    the rows on torch memory (torch's allocator does not ask)."""
    core = getattr(np, "_core", None) or np.core
    core.multiarray._set_madvise_hugepage(enabled)


def case_fn(ctx: Any, c: dict) -> tuple[Callable[[], Any] | None, str | None]:
    huge_pages(c.get("memory", "numpy") != "torch")
    n, op = c["n"], c["op"]
    f, q = c["float_dtype"], c["quant_dtype"]
    if c.get("group") or op.startswith("gguf"):
        return None, "pi-quant has no group-wise or GGUF quantization"
    if f not in DTYPES or q not in DTYPES:
        return None, f"pi-quant has no {f if f not in DTYPES else q}"
    if op == "fake_quantize":
        return None, "pi-quant has no fake quantize"
    fdt, qdt = getattr(piquant.DataType, DTYPES[f]), getattr(piquant.DataType, DTYPES[q])
    x32 = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    x = x32 if f == "float32" else (x32.view(np.uint32) >> 16).astype(np.uint16)
    scale, zp = ctx.compute_quant_params_ptr_float32(x32.ctypes.data, qdt, n)
    if op == "compute_params":
        if f != "float32":
            return lambda: ctx.compute_quant_params_ptr_bfloat16(x.ctypes.data, qdt, n), None
        return lambda: ctx.compute_quant_params_ptr_float32(x.ctypes.data, qdt, n), None
    qbuf = storage(q, n)
    ctx.quantize_ptr(x32.ctypes.data, piquant.DataType.F32, qbuf.ctypes.data, qdt, n, scale, zp, piquant.RoundMode.NEAREST)
    if op == "quantize":
        mode = piquant.RoundMode.STOCHASTIC if c["round_mode"] == "stochastic" else piquant.RoundMode.NEAREST
        return lambda: ctx.quantize_ptr(x.ctypes.data, fdt, qbuf.ctypes.data, qdt, n, scale, zp, mode), None
    out = np.zeros(n, np.float32 if f == "float32" else np.uint16)
    red = piquant.ReduceOp.ADD if c["reduce"] == "add" else piquant.ReduceOp.SET
    return lambda: ctx.dequantize_ptr(qbuf.ctypes.data, qdt, out.ctypes.data, fdt, n, scale, zp, red), None


def main() -> None:
    req = json.load(sys.stdin)
    ctx = piquant.Context(req["threads"])
    medians, skipped = [], []
    for c in req["cases"]:
        fn, why = case_fn(ctx, c)
        medians.append(None if fn is None else median_time(fn, req["budget"], req["min_repeats"]))
        skipped.append(why)
    print(json.dumps({"version": getattr(piquant, "__version__", "?"), "medians": medians, "skipped": skipped}))


if __name__ == "__main__":
    main()
