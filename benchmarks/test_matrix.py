"""One pytest-benchmark per (row, size, peer), and per (call row, size,
side) for the call rows of piquant/_bench_calls.py; see conftest.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

import piquant
from piquant import _bench, _bench_calls

try:
    import torch

    torch.set_num_threads(piquant.Context.get().num_threads)
except ImportError:
    torch = None

PEERS = {
    "piquant": None,
    "torch": _bench.torch_fn,
    "torch decomposed": _bench.decomposed_fn,
    "torchao": _bench.torchao_fn,
    "gguf": _bench.gguf_fn,
    "reference": _bench.reference_fn,
}
_inputs: dict[int, np.ndarray] = {}


def inputs(row: _bench.Row, n: int) -> _bench.Inputs:
    if n not in _inputs:
        _inputs.clear()  # one size at a time: 27M-element inputs are large
        _inputs[n] = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    return _bench.Inputs(row, _inputs[n], torch)


@pytest.mark.parametrize("peer", list(PEERS))
@pytest.mark.parametrize("n", _bench.SIZES)
@pytest.mark.parametrize("row", _bench.ROWS, ids=lambda r: r.name)
def test_matrix(benchmark, pi_quant_medians, row, n, peer):
    if not row.fits(n):
        pytest.skip(f"{row.name} needs whole groups/blocks")
    benchmark.group = f"{row.name} n={n}"
    benchmark.extra_info.update(row=row.name, n=n, peer=peer, bytes=row.bytes_moved(n))
    inp = inputs(row, n)
    if peer == "piquant":
        fn = _bench.piquant_fn(inp, piquant.Context.get())
        if (row.name, n) in pi_quant_medians:
            benchmark.extra_info["pi_quant_median_s"] = pi_quant_medians[(row.name, n)]
    else:
        if peer not in ("reference", "gguf") and torch is None:
            pytest.skip("torch is not installed")
        if peer == "reference" and n > _bench.REFERENCE_MAX["quick"]:
            pytest.skip("the reference is too slow at this size")
        fn, why = PEERS[peer](inp)
        if fn is None:
            pytest.skip(why)
    benchmark(fn)


@pytest.mark.parametrize("side", ["piquant", "beside"])
@pytest.mark.parametrize("n", _bench_calls.SIZES)
@pytest.mark.parametrize("call", _bench_calls.CALLS, ids=lambda c: re.sub(r"\W+", "_", c.name).strip("_"))
def test_call(benchmark, call, n, side):
    """A public call form (side "piquant") or its equivalent (side "beside"):
    the two share a group, so pytest-benchmark's table puts them side by side."""
    if torch is None and (call.needs_torch or not call.beside.startswith("per tensor")):
        pytest.skip("torch is not installed")
    ours, theirs = call.make(_bench_calls.CallInputs(np.random.default_rng(0).standard_normal(n, dtype=np.float32), torch))
    benchmark.group = f"call {call.name} n={n}"
    benchmark.extra_info.update(call=call.name, n=n, side=side, beside=call.beside, goal=call.goal)
    benchmark(ours if side == "piquant" else theirs)
