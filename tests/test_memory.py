"""No allocation on the hot path beyond the result: quantizing 27,264,000
float32 values to uint8 raises the peak RSS by at most the output plus 1 MiB.
Measured in a fresh process, after a warm-up call has loaded everything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ISAS

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")

SCRIPT = r"""
import resource, numpy as np, piquant
n = 27_264_000
x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
piquant.quantize(x[:100_000], "uint8")            # warm-up: library, pool, code paths
piquant.quantize(x[:100_000], "uint8", round_mode="stochastic")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
q = piquant.quantize(x, "uint8")                  # parameters computed, then a new result
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = np.empty(n, np.uint8); out[:] = 1           # a preallocated out: no growth at all
before_out = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
piquant.quantize(x, "uint8", scale=q.scale, zero_point=q.zero_point, out=out, round_mode="stochastic")
after_out = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, (after_out - before_out) * 1024)
"""


def test_peak_memory_is_the_output_plus_at_most_1_mib():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    grew_new, grew_out = map(int, r.stdout.split())
    assert grew_new <= 27_264_000 + (1 << 20), grew_new
    assert grew_out <= 1 << 20, grew_out
