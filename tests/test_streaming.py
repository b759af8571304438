"""Outputs of 8-bit, 16-bit, 32-bit and 64-bit elements of 8 MiB and more are written with
non-temporal stores through a staging buffer, line by line: check them
against the reference with the destination at every kind of misalignment,
on every ISA and thread count."""

from __future__ import annotations

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


@pytest.mark.parametrize("offset", [0, 4, 16, 36])
def test_quantize_streams_exactly(contexts, data, offset):
    n = 2_200_003  # 8.8 MB of int32 out
    x = data[:n]
    s, zp = 1e-4, -7
    want = ref.quantize(x, "int32", s, zp)
    assert want.nbytes >= STREAM_MIN_BYTES
    for isa in ISAS:
        for threads in (1, 2):
            out = misaligned(n, np.int32, offset)
            piquant.quantize(x, "int32", scale=s, zero_point=zp, out=out, ctx=contexts(isa, threads))
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
    # 64-bit output: 8-byte misalignments.
    m = 1_100_003
    qm = ref.quantize(data[:m], "int4", 0.3, -1)
    want64 = ref.dequantize(qm, "int4", 0.3, -1, numel=m, out_dtype="float64")
    for isa in ISAS:
        out = misaligned(m, np.float64, 8 * (offset // 4 % 8))
        piquant.dequantize(qm, np.float64, scale=0.3, zero_point=-1, qdtype="int4", shape=(m,), out=out, ctx=contexts(isa, 2))
        assert np.array_equal(out.view(np.uint64), want64.view(np.uint64)), isa


@pytest.mark.parametrize(("offset", "src_offset"), [(0, 0), (16, 16), (5, 16), (33, 36), (16, 4)])
def test_byte_outputs_stream_exactly(contexts, data, offset, src_offset):
    """8-bit outputs of 8 MiB and more, nearest and stochastic (whose counter
    is the element's index in the call, also inside the staging buffer), the
    input at 16 bytes past a line as numpy's large arrays are, or elsewhere."""
    import ml_dtypes

    n = 8_400_001
    x = misaligned(n, np.float32, src_offset)
    x[:] = data[:n]
    s, zp = 0.02, 120
    want = ref.quantize(x, "uint8", s, zp)
    want_sr = ref.quantize(x, "uint8", s, zp, round_mode="stochastic", seed=77)
    assert want.nbytes >= STREAM_MIN_BYTES
    for isa in ISAS:
        for threads in (1, 2):
            out = misaligned(n, np.uint8, offset)
            piquant.quantize(x, "uint8", scale=s, zero_point=zp, out=out, ctx=contexts(isa, threads))
            assert np.array_equal(out, want), (isa, threads)
            piquant.quantize(x, "uint8", scale=s, zero_point=zp, round_mode="stochastic", seed=77, out=out, ctx=contexts(isa, threads))
            assert np.array_equal(out, want_sr), (isa, threads)
    # Per-group parameters and FP8 codes take the same streamed stores.
    g = x[: n - 1].reshape(-1, 800)
    rng = np.random.default_rng(offset)
    gs = rng.uniform(0.01, 0.03, (g.shape[0], 50)).astype(np.float32)
    gz = rng.integers(100, 150, (g.shape[0], 50))
    want_g = ref.quantize(g, "uint8", gs, gz, group_size=16)
    want_f8 = ref.quantize(x, "float8_e4m3fn", 0.01, 0)
    for isa in ISAS:
        ctx = contexts(isa, 2)
        out = misaligned(n - 1, np.uint8, offset).reshape(g.shape)
        piquant.quantize(g, "uint8", scale=gs, zero_point=gz, group_size=16, out=out, ctx=ctx)
        assert np.array_equal(out, want_g), isa
        out8 = misaligned(n, np.uint8, offset)
        piquant.quantize(x, "float8_e4m3fn", scale=0.01, out=out8.view(ml_dtypes.float8_e4m3fn), ctx=ctx)
        assert np.array_equal(out8, want_f8.view(np.uint8)), isa


@pytest.mark.parametrize("offset", [0, 2, 34])
def test_16_bit_outputs_stream_exactly(contexts, data, offset):
    import ml_dtypes

    n = 4_400_003  # 8.8 MB of bfloat16 or int16 out
    q = ref.quantize(data[:n], "uint8", 0.05, 128)
    want = ref.dequantize(q, "uint8", 0.05, 128, numel=n, out_dtype="bfloat16")
    want16 = ref.quantize(data[:n], "int16", 1e-3, -3)
    want16_sr = ref.quantize(data[:n], "int16", 1e-3, -3, round_mode="stochastic", seed=5)
    assert want.nbytes >= STREAM_MIN_BYTES
    for isa in ISAS:
        for threads in (1, 2):
            ctx = contexts(isa, threads)
            o16 = misaligned(n, np.int16, offset)
            piquant.quantize(data[:n], "int16", scale=1e-3, zero_point=-3, out=o16, ctx=ctx)
            assert np.array_equal(o16, want16), (isa, threads)
            piquant.quantize(data[:n], "int16", scale=1e-3, zero_point=-3, round_mode="stochastic", seed=5, out=o16, ctx=ctx)
            assert np.array_equal(o16, want16_sr), (isa, threads)
            out = misaligned(n, np.uint16, offset).view(ml_dtypes.bfloat16)
            piquant.dequantize(q, ml_dtypes.bfloat16, scale=0.05, zero_point=128, qdtype="uint8", shape=(n,), out=out, ctx=contexts(isa, threads))
            assert np.array_equal(out.view(np.uint16), want.view(np.uint16)), (isa, threads)
