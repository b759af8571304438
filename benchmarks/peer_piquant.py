"""Runs inside a virtual environment holding pi-quant (PyPI ``pypiquant``,
which also imports as ``piquant``) and prints median milliseconds of its
float32 → uint8 quantize, nearest and stochastic, as JSON.

    <venv>/bin/python benchmarks/peer_piquant.py NUMEL REPEATS THREADS
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import piquant


def main() -> None:
    n, repeats, threads = (int(a) for a in sys.argv[1:4])
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    out = np.empty(n, np.uint8)
    ctx = piquant.Context(threads)
    scale, zp = ctx.compute_quant_params_ptr_float32(x.ctypes.data, piquant.DataType.UINT8, n)
    result = {}
    for mode in (piquant.RoundMode.NEAREST, piquant.RoundMode.STOCHASTIC):
        def run() -> None:
            ctx.quantize_ptr(x.ctypes.data, piquant.DataType.F32, out.ctypes.data, piquant.DataType.UINT8, n, scale, zp, mode)

        run()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        result[f"pi-quant quantize {mode.name.lower()} (out=)"] = statistics.median(times)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
