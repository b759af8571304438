"""Outputs of 8 MiB and more are written with non-temporal stores through
a staging buffer, line by line: check them against the reference with the
destination at every kind of misalignment, on every ISA and thread count."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import piquant
import piquant_reference as ref
from conftest import ISAS

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")

STREAM_MIN_BYTES = 8 << 20  # zig/abi.zig: stream_min_bytes


def misaligned(n: int, dtype, offset_bytes: int) -> np.ndarray:
    """A C-contiguous n-element array whose data starts offset_bytes past a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(n * itemsize + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset_bytes
    return raw[start : start + n * itemsize].view(dtype)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return (rng.standard_normal(8_400_001) * 3).astype(np.float32)


@pytest.mark.parametrize("offset", [0, 1, 16, 33])
def test_quantize_streams_exactly(contexts, data, offset):
    s, zp = 0.05, 121
    want = ref.quantize(data, "uint8", s, zp)
    assert data.size >= STREAM_MIN_BYTES
    for isa in ISAS:
        for threads in (1, 2):
            out = misaligned(data.size, np.uint8, offset)
            piquant.quantize(data, "uint8", scale=s, zero_point=zp, out=out, ctx=contexts(isa, threads))
            assert np.array_equal(out, want), (isa, threads)


@pytest.mark.parametrize("offset", [0, 4, 16, 60])
def test_dequantize_and_fake_quantize_stream_exactly(contexts, data, offset):
    n = 2_200_003  # 8.8 MB of float32 out
    x = data[:n]
    q = ref.quantize(x, "int4", 0.3, -1)
    want = ref.dequantize(q, "int4", 0.3, -1, numel=n)
    want_fake = ref.fake_quantize(x, "uint8", 0.05, 100)
    for isa in ISAS:
        for threads in (1, 2):
            ctx = contexts(isa, threads)
            out = misaligned(n, np.float32, offset)
            piquant.dequantize(q, scale=0.3, zero_point=-1, qdtype="int4", shape=(n,), out=out, ctx=ctx)
            assert np.array_equal(out.view(np.uint32), want.view(np.uint32)), (isa, threads)
            out = misaligned(n, np.float32, offset)
            piquant.fake_quantize(x, "uint8", scale=0.05, zero_point=100, out=out, ctx=ctx)
            assert np.array_equal(out.view(np.uint32), want_fake.view(np.uint32)), (isa, threads)
    # 16-bit output just above the threshold: 2-byte misalignment too.
    m = 4_400_003
    qm = ref.quantize(data[:m], "int4", 0.3, -1)
    want16 = ref.dequantize(qm, "int4", 0.3, -1, numel=m, out_dtype="bfloat16")
    for isa in ISAS:
        out = misaligned(m, ml_dtypes.bfloat16, offset + 2)
        piquant.dequantize(qm, ml_dtypes.bfloat16, scale=0.3, zero_point=-1, qdtype="int4", shape=(m,), out=out, ctx=contexts(isa, 2))
        assert np.array_equal(out.view(np.uint16), want16), isa
