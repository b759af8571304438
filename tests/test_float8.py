"""FP8 (float8_e4m3fn, float8_e5m2) as quantized types: the reference
against torch's own scaled cast and ml_dtypes bit for bit, the native
kernels against the reference on every ISA variant and thread count
(per tensor, per channel, per group; both rounding modes; set and add), and
the Python API's forms (torch float8 tensors, ml_dtypes arrays, no zero
point)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import piquant
import piquant_reference as ref
from conftest import ISAS, NP_FLOAT, THREADS, as_bytes, at_offset, in_float_type
from piquant_reference import float8

torch = pytest.importorskip("torch")

FP8 = tuple(float8.FORMATS)
TORCH_FP8 = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
FTYPES = tuple(NP_FLOAT)
SIZES = (0, 1, 3, 16, 17, 63, 65, 1000, 4097, 100_003)
SCALES = (0.25, 0.0371, 3.0e-3)
MODES = ("nearest", "stochastic")


def grid(fmt: str) -> np.ndarray:
    """Every finite non-negative FP8 value, ascending, as float64."""
    v = ml_dtypes.finfo(float8.FORMATS[fmt].storage)
    codes = np.arange(256, dtype=np.uint8).view(float8.FORMATS[fmt].storage).astype(np.float64)
    codes = codes[np.isfinite(codes) & (codes >= 0) & ~np.signbit(codes)]
    assert codes.max() == float(v.max)
    return np.unique(codes)


def adversarial(rng, n: int, fmt: str, ftype: str, scale: float) -> np.ndarray:
    """x whose y = x / scale hits every FP8 value, every tie between
    neighbours (and one float32 ulp either side), the subnormals, values at
    and past max, ±0, ±inf, NaN, float32 subnormals, random magnitudes
    across the whole range, and raw bit patterns of the float type."""
    c = np.float64 if ftype == "float64" else np.float32
    g = grid(fmt)
    mids = (g[1:] + g[:-1]) / 2
    mx = g[-1]
    pool = np.concatenate([g, mids, np.nextafter(mids.astype(np.float32), np.inf), np.nextafter(mids.astype(np.float32), -np.inf),
                           [mx * 1.03, mx * 1.1, mx * 2, 1e30, np.inf, np.nan, 0.0, g[1] / 2, g[1] / 4, 1e-40]]).astype(np.float64)
    pool = np.concatenate([pool, -pool])
    x = np.exp2(rng.uniform(np.log2(g[1]) - 3, np.log2(mx) + 1, n)) * rng.choice([-1.0, 1.0], n)
    if n:
        m = max(1, n // 3)
        x[rng.integers(0, n, m)] = rng.choice(pool, m)
    x[: min(n, pool.size)] = pool[: min(n, pool.size)]
    with np.errstate(over="ignore"):
        x = (x * scale).astype(c)
    return in_float_type(x, ftype, rng)


def widened(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.float64:
        return x
    return x.astype(np.float32)


# ---------------------------------------------------------------- the reference against torch and ml_dtypes


@pytest.mark.parametrize("ftype", ("float32", "bfloat16", "float16"))
@pytest.mark.parametrize("fmt", FP8)
def test_reference_is_torchs_scaled_cast(rng, fmt, ftype):
    """(x * inv).clamp(-max, max).to(float8) in torch, for inputs widened to
    float32 (torch casts float64 through float32, a double rounding: float64
    is checked against a search for the nearest code below)."""
    mx = float8.FORMATS[fmt].max
    for scale in SCALES:
        x = adversarial(rng, 50_000, fmt, ftype, scale)
        inv = np.float32(1) / np.float32(scale)
        t = (torch.from_numpy(widened(x)) * torch.tensor(inv)).clamp(-mx, mx).to(TORCH_FP8[fmt])
        want = t.view(torch.uint8).numpy()
        got = ref.quantize(x, fmt, scale, 0)
        assert got.dtype == float8.FORMATS[fmt].storage
        np.testing.assert_array_equal(got.view(np.uint8), want, err_msg=f"scale={scale}")


def nearest_codes(y: np.ndarray, fmt: str) -> np.ndarray:
    """The FP8 code nearest to each |y| (ties to the even code), found by
    search in the grid: an oracle independent of any cast. Midpoints of
    FP8 neighbours are exact in float64."""
    f = float8.FORMATS[fmt]
    g = grid(fmt)
    a = np.minimum(np.abs(y.astype(np.float64)), f.max)
    hi = np.clip(np.searchsorted(g, a), 1, g.size - 1)
    lo = hi - 1
    mid = (g[lo] + g[hi]) / 2
    pick = np.where(a < mid, lo, np.where(a > mid, hi, np.where(lo % 2 == 0, lo, hi)))
    pick = np.where(a == g[lo], lo, pick)
    codes = g[pick].astype(f.storage).view(np.uint8)  # exact values: any cast is right
    return codes | (np.signbit(y).astype(np.uint8) << 7)


@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("fmt", FP8)
def test_reference_is_ml_dtypes_cast(rng, fmt, ftype):
    """ml_dtypes' cast of the clamped product and a search for the nearest
    code. ml_dtypes writes E5M2's NaN as 0x7E where ours (and torch's) is
    0x7F, and rounds float64 to a float8 subnormal through float32 (a
    double rounding: 3.5·2^-9·(1 - 1e-12) becomes 4·2^-9): for float64 the
    search is the oracle."""
    f = float8.FORMATS[fmt]
    c = ref.compute_dtype(ftype)
    for scale in SCALES:
        x = adversarial(rng, 50_000, fmt, ftype, scale)
        with np.errstate(over="ignore", invalid="ignore"):
            y = widened(x) * (c(1) / c(scale))
        got = ref.quantize(x, fmt, scale, 0).view(np.uint8)
        nan = np.isnan(y)
        np.testing.assert_array_equal(got[~nan], nearest_codes(y[~nan], fmt), err_msg=f"scale={scale}")
        if ftype != "float64":
            want = np.clip(y, -f.max, f.max).astype(f.storage).view(np.uint8)
            np.testing.assert_array_equal(got[~nan], want[~nan], err_msg=f"scale={scale}")
        np.testing.assert_array_equal(got[nan] & 0x7F, 0x7F)
        np.testing.assert_array_equal(got[nan] >> 7, np.signbit(y[nan]))


@pytest.mark.parametrize("fmt", FP8)
def test_reference_decodes_as_ml_dtypes(fmt):
    codes = np.arange(256, dtype=np.uint8)
    want = codes.view(float8.FORMATS[fmt].storage).astype(np.float32)
    got = ref.dequantize(codes.view(float8.FORMATS[fmt].storage), fmt, 1.0, 0)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    back = ref.dequantize(codes.view(float8.FORMATS[fmt].storage), fmt, 1.0, 0, out_dtype="float64")
    np.testing.assert_array_equal(back.view(np.uint64), want.astype(np.float64).view(np.uint64))


@pytest.mark.parametrize("fmt", FP8)
def test_reference_fake_quantize_is_the_round_trip_through_torch(rng, fmt):
    mx = float8.FORMATS[fmt].max
    x = adversarial(rng, 20_000, fmt, "float32", 0.0371)
    s = np.float32(0.0371)
    t = ((torch.from_numpy(x) * torch.tensor(np.float32(1) / s)).clamp(-mx, mx).to(TORCH_FP8[fmt]).float() * torch.tensor(s)).numpy()
    got = ref.fake_quantize(x, fmt, 0.0371, 0)
    nan = np.isnan(t)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), t[~nan].view(np.uint32))
    assert np.isnan(got[nan]).all()


def test_reference_saturates_ties_and_zeros():
    q = ref.quantize(np.array([17, 19, 464, 1e9, -np.inf, np.inf, -0.0, 2.0**-10, 3 * 2.0**-10, 2.0**-11, np.nan], np.float32), "float8_e4m3fn", 1.0, 0)
    # 17 → 16, 19 → 20 (ties to even); past max → ±448; -0 and a negative underflow keep the sign
    assert list(q.view(np.uint8)) == [0x58, 0x5A, 0x7E, 0x7E, 0xFE, 0x7E, 0x80, 0x00, 0x02, 0x00, 0x7F]
    q = ref.quantize(np.array([57344, 61440, np.inf, -np.nan], np.float32), "float8_e5m2", 1.0, 0)
    assert list(q.view(np.uint8)) == [0x7B, 0x7B, 0x7B, 0xFF]


@pytest.mark.parametrize("fmt", FP8)
def test_reference_compute_params(fmt):
    mx = float8.FORMATS[fmt].max
    x = np.array([0.5, -3.0, np.nan, 2.0], np.float32)
    for symmetric in (False, True):
        p = ref.compute_params(x, fmt, symmetric)
        assert p == (np.float32(3.0) / np.float32(mx), 0)
    assert ref.compute_params(np.zeros(4, np.float32), fmt, True) == (1.0, 0)
    assert ref.compute_params(np.array([1e-44], np.float32), fmt, True).scale == np.finfo(np.float32).tiny
    with pytest.raises(ValueError, match="infinite"):
        ref.compute_params(np.array([np.inf], np.float32), fmt, True)


# ---------------------------------------------------------------- native against the reference


pytestmark_native = pytest.mark.skipif(not ISAS, reason="native library not loaded")


@pytestmark_native
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("fmt", FP8)
def test_native_quantize_and_fake_quantize(contexts, rng, isa, threads, ftype, fmt):
    ctx = contexts(isa, threads)
    for n in SIZES:
        scale = float(rng.choice(SCALES))
        x = adversarial(rng, n, fmt, ftype, scale)
        for mode in MODES:
            seed = int(rng.integers(0, 2**63))
            got = piquant.quantize(x, fmt, scale=scale, round_mode=mode, seed=seed, ctx=ctx)
            want = ref.quantize(x, fmt, scale, 0, round_mode=mode, seed=seed)
            assert got.data.dtype == want.dtype and got.zero_point == 0
            np.testing.assert_array_equal(as_bytes(got.data), as_bytes(want), err_msg=f"n={n} scale={scale} {mode}")
            for reduce in ("set", "add"):
                start = adversarial(rng, n, fmt, ftype, 1.0)
                out = start.copy()
                piquant.fake_quantize(x, fmt, scale=scale, zero_point=0, round_mode=mode, seed=seed, reduce=reduce, out=out, ctx=ctx)
                expect = start.copy()
                ref.fake_quantize(x, fmt, scale, 0, round_mode=mode, seed=seed, out=expect, reduce=reduce)
                np.testing.assert_array_equal(as_bytes(out), as_bytes(expect), err_msg=f"fake n={n} {mode} {reduce}")


@pytestmark_native
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("fmt", FP8)
def test_native_dequantize(contexts, rng, isa, threads, ftype, fmt):
    ctx = contexts(isa, threads)
    st = float8.FORMATS[fmt].storage
    huge = 1e300 if ftype == "float64" else 3.0e36
    for n in SIZES:
        data = rng.integers(0, 256, n, dtype=np.uint16).astype(np.uint8).view(st)
        data[: min(n, 256)] = np.arange(min(n, 256), dtype=np.uint8).view(st)  # every code
        for reduce in ("set", "add"):
            scale = float(rng.choice([0.25, 0.0371, 1e-30, huge]))
            start = adversarial(rng, n, fmt, ftype, 1.0)
            out = start.copy()
            piquant.dequantize(data, NP_FLOAT[ftype], scale=scale, reduce=reduce, out=out, ctx=ctx)
            want = start.copy()
            ref.dequantize(data, fmt, scale, 0, out_dtype=ftype, out=want, reduce=reduce)
            np.testing.assert_array_equal(as_bytes(out), as_bytes(want), err_msg=f"n={n} scale={scale} {reduce}")


@pytestmark_native
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ftype", ("float32", "float64"))
@pytest.mark.parametrize("fmt", FP8)
def test_native_every_alignment(contexts, rng, isa, threads, ftype, fmt):
    """Per-tensor nearest loops align their blocks to the wider array
    (stream.zig): inputs and outputs at every element offset from a line,
    quantize, fake_quantize and dequantize, set and add, both rounding modes
    (stochastic keeps its blocks where they start)."""
    ctx = contexts(isa, threads)
    n = 40_011
    scale = 0.0371
    base = adversarial(rng, n, fmt, ftype, scale)
    st = float8.FORMATS[fmt].storage
    for src_off, dst_off in [(k, (5 * k + 3) % 17) for k in range(17)]:
        x = at_offset(base, src_off)
        for mode in MODES:
            seed = int(rng.integers(0, 2**63))
            want = ref.quantize(x, fmt, scale, 0, round_mode=mode, seed=seed)
            got = at_offset(np.zeros(n, st), dst_off)
            piquant.quantize(x, fmt, scale=scale, round_mode=mode, seed=seed, out=got, ctx=ctx)
            np.testing.assert_array_equal(as_bytes(got), as_bytes(want), err_msg=f"offsets {src_off}/{dst_off} {mode}")
            for reduce in ("set", "add"):
                out = at_offset(base, dst_off)
                expect = out.copy()
                piquant.fake_quantize(x, fmt, scale=scale, zero_point=0, round_mode=mode, seed=seed, reduce=reduce, out=out, ctx=ctx)
                ref.fake_quantize(x, fmt, scale, 0, round_mode=mode, seed=seed, out=expect, reduce=reduce)
                np.testing.assert_array_equal(as_bytes(out), as_bytes(expect), err_msg=f"fake offsets {src_off}/{dst_off} {mode} {reduce}")
        data = at_offset(ref.quantize(base, fmt, scale, 0), dst_off)
        for reduce in ("set", "add"):
            out = at_offset(base, src_off)
            expect = out.copy()
            piquant.dequantize(data, NP_FLOAT[ftype], scale=scale, reduce=reduce, out=out, ctx=ctx)
            ref.dequantize(data, fmt, scale, 0, out_dtype=ftype, out=expect, reduce=reduce)
            np.testing.assert_array_equal(as_bytes(out), as_bytes(expect), err_msg=f"dequantize offsets {src_off}/{dst_off} {reduce}")


@pytestmark_native
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", FP8)
def test_native_per_channel_and_group(contexts, rng, isa, threads, fmt):
    ctx = contexts(isa, threads)
    for ftype in ("float32", "bfloat16", "float64"):
        for shape, grouping in (((7, 3001), {"axis": 0}), ((64, 37), {"axis": 1}), ((3, 64, 4), {"axis": -1}), ((33, 256), {"group_size": 32}),
                                ((4, 4096), {"group_size": 4096}), ((9, 24), {"group_size": 3})):
            x = adversarial(rng, int(np.prod(shape)), fmt, ftype, 0.05).reshape(shape)
            finite = x.copy()
            with np.errstate(invalid="ignore"):
                finite[np.isinf(x.astype(np.float64))] = 0  # parameters need finite ranges
            p = piquant.compute_params(finite, fmt, **grouping, ctx=ctx)
            pr = ref.compute_params(finite, fmt, True, **grouping)
            np.testing.assert_array_equal(p.scale, pr.scale)
            np.testing.assert_array_equal(p.zero_point, 0)
            for mode in MODES:
                seed = int(rng.integers(0, 2**63))
                got = piquant.quantize(x, fmt, scale=p.scale, round_mode=mode, seed=seed, **grouping, ctx=ctx)
                want = ref.quantize(x, fmt, p.scale, pr.zero_point, round_mode=mode, seed=seed, **grouping)
                np.testing.assert_array_equal(as_bytes(got.data), as_bytes(want), err_msg=f"{shape} {grouping} {mode}")
                back = piquant.dequantize(got, ftype, ctx=ctx)
                expect = ref.dequantize(want, fmt, p.scale, pr.zero_point, shape=shape, out_dtype=ftype, **grouping)
                np.testing.assert_array_equal(as_bytes(back), as_bytes(expect))
                fq = piquant.fake_quantize(x, fmt, scale=p.scale, round_mode=mode, seed=seed, **grouping, ctx=ctx)
                np.testing.assert_array_equal(as_bytes(fq), as_bytes(ref.fake_quantize(x, fmt, p.scale, pr.zero_point, round_mode=mode, seed=seed, **grouping)))


@pytestmark_native
@pytest.mark.parametrize("fmt", FP8)
def test_native_compute_params(contexts, fmt):
    for isa in ISAS:
        ctx = contexts(isa, 2)
        for x in (np.array([0.5, -3.0, np.nan, 2.0], np.float32), np.zeros(100_000, np.float32), np.array([1e-44, 0], np.float32),
                  np.linspace(-7, 5, 100_003)):
            for symmetric in (False, True):
                got = piquant.compute_params(x, fmt, symmetric=symmetric, ctx=ctx)
                want = ref.compute_params(x, fmt, symmetric)
                assert (got.scale, got.zero_point) == (float(want.scale), want.zero_point)
        with pytest.raises(ValueError, match="infinite"):
            piquant.compute_params(np.array([1.0, -np.inf], np.float32), fmt, ctx=ctx)


# ---------------------------------------------------------------- the Python API's forms


@pytest.mark.parametrize("fmt", FP8)
def test_torch_float8_storage_and_round_trip(fmt):
    mx = float8.FORMATS[fmt].max
    x = torch.randn(3, 1000) * 100
    q = piquant.quantize(x, fmt, scale=0.5)
    assert q.data.dtype == TORCH_FP8[fmt] and q.data.shape == x.shape and q.zero_point == 0
    want = (x * torch.tensor(np.float32(2.0))).clamp(-mx, mx).to(TORCH_FP8[fmt])
    assert torch.equal(q.data.view(torch.uint8), want.view(torch.uint8))
    assert torch.equal(piquant.dequantize(q), want.float() * 0.5)
    # torch's dtype names the type too, and a torch float8 tensor dequantizes without qdtype
    q2 = piquant.quantize(x, TORCH_FP8[fmt], scale=0.5)
    assert torch.equal(q2.data.view(torch.uint8), want.view(torch.uint8))
    assert torch.equal(piquant.dequantize(want, scale=0.5), want.float() * 0.5)
    # computed parameters: amax / max
    qc = piquant.quantize(x, fmt)
    assert qc.scale == float(np.float32(x.abs().max().item()) / np.float32(mx))


@pytest.mark.parametrize("fmt", FP8)
def test_numpy_ml_dtypes_storage(fmt):
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    q = piquant.quantize(x, fmt, scale=0.01)
    assert q.data.dtype == float8.FORMATS[fmt].storage
    np.testing.assert_array_equal(piquant.dequantize(q), q.data.astype(np.float32) * np.float32(0.01))
    out = np.empty(x.shape, float8.FORMATS[fmt].storage)
    piquant.quantize(x, fmt, scale=0.01, zero_point=0, out=out)
    np.testing.assert_array_equal(out.view(np.uint8), q.data.view(np.uint8))


@pytest.mark.parametrize("fmt", FP8)
def test_zero_point_other_than_zero_raises(fmt):
    x = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="zero_point"):
        piquant.quantize(x, fmt, scale=1.0, zero_point=1)
    with pytest.raises(ValueError, match="zero_point"):
        piquant.fake_quantize(x, fmt, scale=1.0, zero_point=-1)
    with pytest.raises(ValueError, match="zero_point"):
        piquant.quantize(x.reshape(2, 4), fmt, scale=np.ones(2, np.float32), zero_point=np.array([0, 2]), axis=0)
    with pytest.raises(ValueError, match="scale"):
        piquant.quantize(x, fmt, scale=0.0)


@pytest.mark.parametrize("fmt", FP8)
def test_stochastic_rounding_is_unbiased(fmt):
    """A value a quarter of the way between two grid points rounds up a
    quarter of the time; the mean of the results is the value."""
    lo, hi = (16.0, 18.0) if fmt == "float8_e4m3fn" else (16.0, 20.0)
    v = lo + (hi - lo) / 4
    x = np.full(200_000, v, np.float32)
    q = piquant.quantize(x, fmt, scale=1.0, round_mode="stochastic", seed=5).data.astype(np.float32)
    assert set(np.unique(q)) == {lo, hi}
    assert abs((q == hi).mean() - 0.25) < 0.005
    assert abs(q.mean() - v) < 0.01 * (hi - lo)
    neg = piquant.quantize(-x, fmt, scale=1.0, round_mode="stochastic", seed=5).data.astype(np.float32)
    np.testing.assert_array_equal(neg, -q)  # the magnitude is rounded, keyed by the index
