"""pytest-benchmark suite: the matrix of ``python -m piquant bench`` (rows ×
sizes × peers from piquant/_bench.py), one benchmark per cell, grouped by
row and size so that pytest-benchmark's table puts the peers side by side.

    pip install ".[bench]"
    python -m pytest benchmarks/ [-k 'quantize and 1048576']

pi-quant runs in its own virtual environment (created on first use, see
piquant/_bench.py); its medians, measured in the same session, are attached
to piquant's benchmarks as extra_info["pi_quant_median_s"]. Set
PIQUANT_BENCH_NO_PI_QUANT=1 to skip it.
"""

from __future__ import annotations

import os

import pytest

from piquant import _bench

# torchao's native libraries do not load on this torch (a log line each); the
# benchmarks use its plain-torch quant_primitives.
os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")


def pytest_configure(config: pytest.Config) -> None:
    # torch deprecates its quantized tensor types; they stay the peer timed.
    config.addinivalue_line("filterwarnings", "ignore:.*quantized tensor creation functions:UserWarning")


@pytest.fixture(scope="session")
def pi_quant_medians():
    """(row name, n) → pi-quant's median seconds, for the whole matrix, once."""
    if os.environ.get("PIQUANT_BENCH_NO_PI_QUANT"):
        return {}
    py, _ = _bench.pi_quant_python(None, print)
    if py is None:
        return {}
    import piquant

    cases = [(row, n) for n in _bench.SIZES for row in _bench.ROWS if row.fits(n)]
    medians, _ = _bench.run_pi_quant(py, cases, piquant.Context.get().num_threads, "quick")
    return {(row.name, n): t for (row, n), t in zip(cases, medians) if t is not None}
