"""Native kernels vs piquant_reference, bit for bit, on every ISA variant this
CPU runs, several thread counts and sizes that hit every tail, for every
float type × quantized type, both rounding modes and both store modes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import piquant
import piquant_reference as ref
from conftest import ISAS, THREADS, as_bytes, at_offset, random_quantized

# Above 32,768 elements calls are split over threads; 100,003 gives several
# chunks and a ragged last one.
SIZES = (0, 1, 2, 3, 5, 15, 16, 17, 31, 33, 63, 64, 65, 1000, 4097, 100_003)
QTYPES = ref.QUANTIZED_DTYPES
FTYPES = ref.FLOAT_DTYPES
NP_FLOAT = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
# A power of two makes x * inv_scale exact, so planted ties stay ties; the
# other scale exercises rounding of the product.
SCALES = (0.25, 0.0371)
MODES = ("nearest", "stochastic")

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")


def zero_point_for(qtype: str, rng) -> int:
    """The ends of the range as often as a random value inside it."""
    lo, hi = ref.qrange(qtype)
    inside = int(rng.integers(lo, hi, endpoint=True, dtype=np.uint64 if lo == 0 else np.int64))
    return (lo, hi, inside)[int(rng.integers(0, 3))]


def adversarial_floats(rng, n: int, ftype: str, scale: float, qtype: str = "uint8", zp: int = 0) -> np.ndarray:
    """Values around the quantization grid with planted ties k + 0.5, values
    at and around the saturation edges qmin/qmax - zp (including the 2^31,
    2^63, 2^64 neighbourhoods of wide types), ±0, ±inf, NaN, denormals,
    huge values, and raw random bit patterns of the type."""
    c = np.float64 if ftype == "float64" else np.float32
    x = (rng.standard_normal(n) * 40 * scale).astype(c)
    if n == 0:
        return x.astype(NP_FLOAT[ftype])
    qmin, qmax = ref.qrange(qtype)
    k = rng.integers(-300, 300, n)
    x = np.where(rng.random(n) < 0.3, ((k + 0.5) * scale).astype(c), x)
    edges = [float(e + d) * scale for e in (qmin - zp, qmax - zp) for d in (-2, -1, -0.5, 0, 0.5, 1, 2)]
    edges += [s * 2.0**p * scale for p in (23, 24, 31, 32, 53, 63, 64, 65) for s in (1, -1)]
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-40, -1e-45, 1.17e-38, 3e38, -3e38, 1e9, -1e9, 8388609.0, 2.5 * scale, -2.5 * scale]
    if ftype == "float64":
        special += [1e-310, 1e300, -1e300, 2.0**52 + 1]
    with np.errstate(over="ignore"):
        pool = np.array(special + edges, dtype=np.float64).astype(c)
    m = max(1, n // 10)
    x[rng.integers(0, n, m)] = rng.choice(pool, m)
    x[: min(n, pool.size)] = pool[: min(n, pool.size)]
    if ftype == "bfloat16":
        x = ref.f32_to_bf16_bits(x).view(ml_dtypes.bfloat16)
    else:
        with np.errstate(over="ignore"):
            x = x.astype(NP_FLOAT[ftype])
    if n > 64:  # random bit patterns, NaN payloads included
        width = x.dtype.itemsize * 8
        bits = rng.integers(0, 2**63, n // 16, dtype=np.uint64).astype(np.dtype(f"u{width // 8}"))
        x.view(bits.dtype)[rng.integers(0, n, bits.size)] = bits
    return x


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("qtype", QTYPES)
def test_quantize_matches_reference(contexts, rng, isa, threads, ftype, qtype):
    ctx = contexts(isa, threads)
    for n in SIZES:
        for scale in SCALES:
            zp = zero_point_for(qtype, rng)
            x = adversarial_floats(rng, n, ftype, scale, qtype, zp)
            for mode in MODES:
                seed = int(rng.integers(0, 2**63))
                got = piquant.quantize(x, qtype, scale=scale, zero_point=zp, round_mode=mode, seed=seed, ctx=ctx)
                want = ref.quantize(x, qtype, scale, zp, round_mode=mode, seed=seed)
                assert got.shape == x.shape and (got.scale, got.zero_point) == (float(ref.compute_dtype(ftype)(scale)), zp)
                np.testing.assert_array_equal(as_bytes(got.data), as_bytes(want), err_msg=f"n={n} scale={scale} zp={zp} {mode}")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("qtype", QTYPES)
def test_dequantize_matches_reference(contexts, rng, isa, threads, ftype, qtype):
    ctx = contexts(isa, threads)
    huge = 1e300 if ftype == "float64" else 3.0e36  # overflows to ±inf
    for n in SIZES:
        data = random_quantized(rng, n, qtype)
        zp = zero_point_for(qtype, rng)
        for reduce in ("set", "add"):
            scale = float(rng.choice([0.25, 0.0371, 1e-30, huge]))
            start = adversarial_floats(rng, n, ftype, 0.5)
            out = start.copy()
            piquant.dequantize(data, NP_FLOAT[ftype], scale=scale, zero_point=zp, qdtype=qtype, shape=(n,), reduce=reduce, out=out, ctx=ctx)
            want = start.copy()
            ref.dequantize(data, qtype, scale, zp, numel=n, out_dtype=ftype, out=want, reduce=reduce)
            np.testing.assert_array_equal(as_bytes(out), as_bytes(want), err_msg=f"n={n} scale={scale} zp={zp} {reduce}")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("qtype", QTYPES)
def test_fake_quantize_matches_reference(contexts, rng, isa, threads, ftype, qtype):
    ctx = contexts(isa, threads)
    for n in SIZES[::2] + (100_003,):
        scale = float(rng.choice(SCALES))
        zp = zero_point_for(qtype, rng)
        x = adversarial_floats(rng, n, ftype, scale, qtype, zp)
        for mode in MODES:
            for reduce in ("set", "add"):
                seed = int(rng.integers(0, 2**63))
                start = adversarial_floats(rng, n, ftype, 0.5)
                out = start.copy()
                piquant.fake_quantize(x, qtype, scale=scale, zero_point=zp, round_mode=mode, seed=seed, reduce=reduce, out=out, ctx=ctx)
                want = start.copy()
                ref.fake_quantize(x, qtype, scale, zp, round_mode=mode, seed=seed, out=want, reduce=reduce)
                np.testing.assert_array_equal(as_bytes(out), as_bytes(want), err_msg=f"n={n} zp={zp} {mode} {reduce}")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("symmetric", (False, True))
def test_compute_params_matches_reference(contexts, rng, isa, threads, ftype, symmetric):
    ctx = contexts(isa, threads)
    for n in SIZES:
        x = rng.standard_normal(n) * rng.choice([1e-30, 1e-3, 1.0, 1e4]) + rng.choice([-5.0, 0.0, 5.0])
        if n > 3:
            x[rng.integers(0, n, 3)] = np.nan
        x = x.astype(NP_FLOAT[ftype])
        for qtype in QTYPES:
            got = piquant.compute_params(x, qtype, symmetric=symmetric, ctx=ctx)
            want = ref.compute_params(x, qtype, symmetric)
            assert got.scale == want.scale and type(got.zero_point) is int and got.zero_point == want.zero_point, f"n={n} {qtype}"
            if ftype != "float64":
                assert got.scale == np.float32(got.scale), "float32 compute gives a float32 scale"


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("qtype", ("uint8", "int8", "int16", "uint4"))
def test_every_alignment_matches_reference(contexts, rng, isa, threads, ftype, qtype):
    """Per-tensor loops align their blocks to the wider array (stream.zig):
    inputs and outputs at every element offset from a line, both rounding
    modes (the head's elements keep their stochastic counters)."""
    ctx = contexts(isa, threads)
    n = 40_011
    scale = 0.0371
    zp = zero_point_for(qtype, rng)
    base = adversarial_floats(rng, n, ftype, scale, qtype, zp)
    for src_off, dst_off in [(k, (5 * k + 3) % 17) for k in range(17)]:
        x = at_offset(base, src_off)
        for mode in MODES:
            seed = int(rng.integers(0, 2**63))
            want = ref.quantize(x, qtype, scale, zp, round_mode=mode, seed=seed)
            got = at_offset(np.zeros_like(want), dst_off)
            piquant.quantize(x, qtype, scale=scale, zero_point=zp, round_mode=mode, seed=seed, out=got, ctx=ctx)
            np.testing.assert_array_equal(as_bytes(got), as_bytes(want), err_msg=f"offsets {src_off}/{dst_off} {mode}")
        data = at_offset(ref.quantize(base, qtype, scale, zp), dst_off)
        for reduce in ("set", "add"):
            out = at_offset(base, src_off)
            want = out.copy()
            piquant.dequantize(data, NP_FLOAT[ftype], scale=scale, zero_point=zp, qdtype=qtype, shape=(n,), reduce=reduce, out=out, ctx=ctx)
            ref.dequantize(data, qtype, scale, zp, numel=n, out_dtype=ftype, out=want, reduce=reduce)
            np.testing.assert_array_equal(as_bytes(out), as_bytes(want), err_msg=f"offsets {src_off}/{dst_off} {reduce}")
