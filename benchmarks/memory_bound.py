"""How close piquant's large streaming rows are to the memory's limit
(issue 15): each beside the least work such a pass can do on the same
threads and arrays (benchmarks/memory_bound.c) and, when ``python -m piquant
bench`` has installed it, pi-quant's own C API. All in one process,
alternating round by round, one thread pool alive at a time; medians of the
rounds' medians, and each time ÷ piquant's.

- float32 → uint8: beside reading the input alone and a minimal AVX-512
  quantize writing with non-temporal and with ordinary stores;
- uint8 → float32 added into the output: beside a minimal AVX-512 one.

    python benchmarks/memory_bound.py [--n 27264000] [--rounds 11] [--memory numpy|torch]

``--memory torch`` allocates as torch does, without transparent huge pages.
Needs an x86-64 CPU with AVX-512 and a C compiler with OpenMP.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
SCALE, ZERO_POINT = 0.05, 128
PI_QUANT_F32, PI_QUANT_UINT8 = 0, 4  # its piquant_dtype values
V, SIZE, F, I64, INT = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_float, ctypes.c_int64, ctypes.c_int


def build_bounds(work: Path) -> ctypes.CDLL:
    lib = work / "libmemory_bound.so"
    subprocess.run(["cc", "-O3", "-march=x86-64-v4", "-fopenmp", "-shared", "-fPIC",
                    str(ROOT / "benchmarks" / "memory_bound.c"), "-o", str(lib)], check=True)
    bounds = ctypes.CDLL(str(lib))
    bounds.bound_read.restype = F
    bounds.bound_read.argtypes = [V, SIZE]
    bounds.bound_quantize.argtypes = [V, V, SIZE, F, F, INT]
    bounds.bound_dequantize_add.argtypes = [V, V, SIZE, F, F]
    return bounds


def pi_quant() -> ctypes.CDLL | None:
    """pi-quant 4.1.0's library from the bench's virtual environment, if there."""
    from piquant._bench import pi_quant_venv
    found = sorted(pi_quant_venv().glob("lib/python*/site-packages/piquant/libpiquant.so"))
    if not found:
        return None
    lib = ctypes.CDLL(str(found[0]))
    lib.piquant_context_create.restype = V
    lib.piquant_context_create.argtypes = [SIZE]
    lib.piquant_context_destroy.argtypes = [V]
    lib.piquant_quantize.argtypes = lib.piquant_dequantize.argtypes = [V, V, INT, V, INT, SIZE, F, I64, INT]
    return lib


def aligned(nbytes: int, dtype: type) -> np.ndarray:
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes].view(dtype)


def median_ns(fn: Callable[[], Any], reps: int = 7) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=27_264_000, help="elements, a multiple of 64")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--memory", choices=("numpy", "torch"), default="numpy")
    args = ap.parse_args()
    if args.n <= 0 or args.n % 64:
        ap.error(f"--n must be a positive multiple of 64, got {args.n}")
    from piquant import _backend, _dtypes, _native
    if "avx512f" not in _backend.available_isas():
        ap.error("needs a CPU that runs piquant's avx512f variant")
    # The OpenMP team must sleep between its loops, not spin on the two cores
    # the pools share, and must not pin the main thread: threads it creates
    # (every pool's) would inherit that one-core mask.
    os.environ.update(OMP_NUM_THREADS=str(THREADS), OMP_WAIT_POLICY="passive")
    os.environ.pop("OMP_PROC_BIND", None)
    np._core.multiarray._set_madvise_hugepage(args.memory == "numpy")  # type: ignore[attr-defined]

    ours, _ = _native.load()
    theirs = pi_quant()
    n = args.n
    x = aligned(4 * n, np.float32)
    x[:] = np.random.default_rng(0).standard_normal(n, dtype=np.float32) * 3
    q, acc = aligned(n, np.uint8), aligned(4 * n, np.float32)  # the quantize row's output, the add row's input
    acc[:] = 0
    src, qp, accp = x.ctypes.data, q.ctypes.data, acc.ctypes.data
    f32, u8 = _dtypes.DataType.F32.value, _dtypes.DataType.UINT8.value

    def ours_timer(call: Callable[..., int]) -> Callable[[], float]:
        def timer() -> float:
            ctx = V()
            if status := ours.piquant_context_create(THREADS, None, ctypes.byref(ctx)):
                _native.raise_status(ours, status)
            t = median_ns(partial(call, ctx))
            ours.piquant_context_destroy(ctx)
            return t
        return timer

    def theirs_timer(name: str, *args: Any) -> Callable[[], float] | None:
        if theirs is None:
            return None
        lib = theirs

        def timer() -> float:
            ctx = lib.piquant_context_create(THREADS)
            t = median_ns(partial(getattr(lib, name), ctx, *args))
            lib.piquant_context_destroy(ctx)
            return t
        return timer

    with tempfile.TemporaryDirectory() as tmp:
        bounds = build_bounds(Path(tmp))
        quantize = (src, f32, qp, u8, n, SCALE, ZERO_POINT)
        dequantize_add = (qp, u8, accp, f32, n, SCALE, ZERO_POINT, 1)
        # row: [(name, bytes moved, timer or None)]; the added row's cells each start from zeros
        added = "uint8 → float32, added"
        rows: dict[str, list[tuple[str, int, Callable[[], float] | None]]] = {
            "float32 → uint8": [
                ("piquant", 5 * n, ours_timer(lambda ctx: ours.piquant_quantize(ctx, *quantize, 0, 0))),
                ("pi-quant 4.1.0", 5 * n, theirs_timer("piquant_quantize", src, PI_QUANT_F32, qp, PI_QUANT_UINT8, n, SCALE, ZERO_POINT, 0)),
                ("read the input only", 4 * n, partial(median_ns, partial(bounds.bound_read, src, n))),
                ("minimal, non-temporal stores", 5 * n,
                 partial(median_ns, partial(bounds.bound_quantize, src, qp, n, 1 / SCALE, ZERO_POINT, 1))),
                ("minimal, ordinary stores", 5 * n,
                 partial(median_ns, partial(bounds.bound_quantize, src, qp, n, 1 / SCALE, ZERO_POINT, 0))),
            ],
            added: [
                ("piquant", 9 * n, ours_timer(lambda ctx: ours.piquant_dequantize(ctx, *dequantize_add))),
                ("pi-quant 4.1.0", 9 * n,
                 theirs_timer("piquant_dequantize", qp, PI_QUANT_UINT8, accp, PI_QUANT_F32, n, SCALE, ZERO_POINT, 1)),
                ("minimal", 9 * n, partial(median_ns, partial(bounds.bound_dequantize_add, qp, accp, n, SCALE, ZERO_POINT))),
            ],
        }
        times: dict[tuple[str, str], list[float]] = {(row, name): [] for row, cells in rows.items() for name, _, _ in cells}
        for _ in range(args.rounds):
            for row, cells in rows.items():
                for name, _, timer in cells:
                    if timer is not None:
                        times[row, name].append(timer())
                    if row == added:
                        acc[:] = 0  # so its sums stay finite

    print(f"n={n:,}, {THREADS} threads, {args.memory} memory, {args.rounds} rounds")
    for row, cells in rows.items():
        base = statistics.median(times[row, "piquant"])
        print(row)
        for name, moved, _ in cells:
            if not times[row, name]:
                print(f"  {name:30s} not installed (python -m piquant bench installs it)")
                continue
            t = statistics.median(times[row, name])
            print(f"  {name:30s} {t / 1e6:7.3f} ms  {moved / t:5.1f} GB/s  time ÷ piquant's {t / base:.3f}")


if __name__ == "__main__":
    main()
