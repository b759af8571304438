"""Native kernels vs piquant_reference, bit for bit, on every ISA variant this
CPU runs, several thread counts and sizes that hit every tail."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import piquant
import piquant_reference as ref
from conftest import ISAS, THREADS

SIZES = (0, 1, 2, 3, 15, 16, 17, 31, 63, 64, 65, 1000, 4097, (1 << 20) + 3)
QTYPES = ("uint8", "int8", "uint4", "int4")
FTYPES = ("float32", "bfloat16")
# A power of two makes x * inv_scale exact, so planted ties stay ties; the
# other scale exercises rounding of the product.
SCALES = (0.25, 0.0371)

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")


def adversarial_floats(rng, n: int, scale: float, dtype: str) -> np.ndarray:
    """Random values in and around the range, planted ties k + 0.5 steps,
    ±0, ±inf, NaN, denormals, huge values; for bfloat16 also raw random bit
    patterns."""
    x = (rng.standard_normal(n) * 40 * scale).astype(np.float32)
    if n:
        k = rng.integers(-300, 300, n)
        ties = ((k + 0.5) * scale).astype(np.float32)
        pick = rng.random(n)
        x = np.where(pick < 0.3, ties, x)
        special = np.array(
            [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-40, -1e-45, 1.17e-38, 3e38, -3e38, 1e9, -1e9, 8388609.0, 2.5 * scale, -2.5 * scale],
            dtype=np.float32,
        )
        m = max(1, n // 20)
        x[rng.integers(0, n, m)] = rng.choice(special, m)
        x[: min(n, special.size)] = special[: min(n, special.size)]
        if n > 64:  # random bit patterns, NaN payloads included
            bits = rng.integers(0, 2**32, n // 16, dtype=np.uint64).astype(np.uint32)
            x[rng.integers(0, n, bits.size)] = bits.view(np.float32)
    if dtype == "bfloat16":
        return ref.f32_to_bf16_bits(x).view(ml_dtypes.bfloat16)
    return x


def zero_point_for(qtype: str, rng) -> int:
    lo, hi = ref.qrange(qtype)
    return int(rng.integers(lo, hi + 1))


def as_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("qtype", QTYPES)
def test_quantize_matches_reference(contexts, rng, isa, threads, ftype, qtype):
    ctx = contexts(isa, threads)
    for n in SIZES:
        for scale in SCALES:
            x = adversarial_floats(rng, n, scale, ftype)
            zp = zero_point_for(qtype, rng)
            got = piquant.quantize(x, qtype, scale=scale, zero_point=zp, ctx=ctx)
            want = ref.quantize(x, qtype, scale, zp)
            assert got.shape == x.shape
            np.testing.assert_array_equal(as_bytes(got.data), as_bytes(want), err_msg=f"n={n} scale={scale} zp={zp}")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("reduce", ("set", "add"))
def test_dequantize_matches_reference(contexts, rng, isa, threads, ftype, qtype, reduce):
    ctx = contexts(isa, threads)
    packed = qtype in ("uint4", "int4")
    for n in SIZES:
        nbytes = (n + 1) // 2 if packed else n
        data = rng.integers(0, 256, nbytes, dtype=np.uint16).astype(np.uint8)
        if packed and n % 2:
            data[-1] &= 0x0F
        if qtype == "int8":
            data = data.view(np.int8)
        scale = float(rng.choice([0.25, 0.0371, 3.0e36]))  # the last overflows to ±inf
        zp = zero_point_for(qtype, rng)
        fdt = np.float32 if ftype == "float32" else ml_dtypes.bfloat16
        start = adversarial_floats(rng, n, 0.5, ftype)
        out = start.copy()
        piquant.dequantize(data, fdt, scale=scale, zero_point=zp, qdtype=qtype, shape=(n,), reduce=reduce, out=out, ctx=ctx)
        want = start.copy().view(np.uint16) if ftype == "bfloat16" else start.copy()
        ref.dequantize(data, qtype, scale, zp, numel=n, out_dtype=ftype, out=want, reduce=reduce)
        np.testing.assert_array_equal(as_bytes(out), as_bytes(want), err_msg=f"n={n} scale={scale} zp={zp}")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("symmetric", (False, True))
def test_compute_params_matches_reference(contexts, rng, isa, threads, ftype, symmetric):
    ctx = contexts(isa, threads)
    for n in SIZES:
        x = (rng.standard_normal(n) * rng.choice([1e-30, 1e-3, 1.0, 1e6]) + rng.choice([-5.0, 0.0, 5.0])).astype(np.float32)
        if n > 3:
            x[rng.integers(0, n, 3)] = np.nan
        if ftype == "bfloat16":
            x = x.astype(ml_dtypes.bfloat16)
        for qtype in QTYPES:
            got = piquant.compute_params(x, qtype, symmetric=symmetric, ctx=ctx)
            want = ref.compute_params(x, qtype, symmetric)
            assert (np.float32(got.scale).view(np.uint32), got.zero_point) == (want.scale.view(np.uint32), want.zero_point), f"n={n}"
