"""docs/semantics.md, *quantize*: rounding (half to even, or stochastic with
the counter-based generator of *The generator of stochastic rounding*) and
saturation on exact integers."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from . import float8
from .parameters import _expand, _sets, layout
from .types import _M64, _float_bound, _float_kind, _to_compute, bits, compute_dtype, pack_bits, qrange, storage_dtype

# ---------------------------------------------------------------- the generator of stochastic rounding


def _splitmix64(seed: int) -> int:
    z = (seed + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _lowbias32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _hashes(k: int, j: np.ndarray) -> np.ndarray:
    """h(j) = lowbias32((lo32(j) · 0x9E3779B1 mod 2^32) ^ K(j)) with
    K(j) = lo32(k) ^ lowbias32(hi32(j) ^ hi32(k)), for uint64 counters j."""
    lo = (j & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (j >> np.uint64(32)).astype(np.uint32)
    key = np.uint32(k & 0xFFFFFFFF) ^ _lowbias32(hi ^ np.uint32(k >> 32))
    return _lowbias32((lo * np.uint32(0x9E3779B1)) ^ key)


def uniforms(seed: int, n: int, c: type = np.float32, start: int = 0) -> np.ndarray:
    """The u ∈ [0, 1) of elements start … start+n-1 for a seed, k = SplitMix64(seed):
    float32: h = h(i >> 1), u = (((h >> 16·(i mod 2)) mod 2^16) + 1/2) · 2^-16;
    float64: u = h(i) · 2^-32."""
    if not 0 <= seed <= _M64:
        raise ValueError(f"seed: expected an integer in [0, 2^64), got {seed!r}")
    k = _splitmix64(seed)
    i = np.arange(start, start + n, dtype=np.uint64)
    if c is np.float64:
        return _hashes(k, i).astype(np.float64) * 2.0**-32
    h = _hashes(k, i >> np.uint64(1))
    h16 = (h >> ((i & np.uint64(1)).astype(np.uint32) * np.uint32(16))) & np.uint32(0xFFFF)
    return (h16.astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-16)


# ---------------------------------------------------------------- rounding and saturation


def _round(y: np.ndarray, round_mode: str, seed: int | None) -> np.ndarray:
    if round_mode == "nearest":
        return np.rint(y)  # half to even
    if round_mode != "stochastic":
        raise ValueError(f"round_mode: expected 'nearest' or 'stochastic', got {round_mode!r}")
    if seed is None:
        raise ValueError("seed: stochastic rounding in the reference needs an explicit seed")
    c = y.dtype.type
    with np.errstate(invalid="ignore"):
        fl = np.floor(y)
        up = uniforms(seed, y.size, c) < y - fl  # y - fl: one float operation in c
    return fl + np.where(up, c(1), c(0))


def _exact_u64(a: np.ndarray) -> np.ndarray:
    """Non-negative integer-valued floats below 2^64 as uint64, exactly."""
    a = a.astype(np.float64)  # exact for float32 too
    big = a >= 2.0**63
    low = np.where(big, a - 2.0**63, a).astype(np.int64).view(np.uint64)  # a - 2^63 is exact
    return low + (big.astype(np.uint64) << np.uint64(63))


def _saturate(r: np.ndarray, dtype: str, zero_points: list[int], inner: int) -> np.ndarray:
    """clamp(r + zero_point, qmin, qmax) for integer-valued floats r (NaN →
    zero_point), exactly, with element i's zero point zero_points[(i // inner)
    % count], as the stored integer type (packed types: int64)."""
    c = r.dtype.type
    qmin, qmax = qrange(dtype)
    count = len(zero_points)
    lo = _expand(np.array([_float_bound(qmin - z, c, up=True) for z in zero_points], c), count, inner, r.size)
    hi = _expand(np.array([_float_bound(qmax - z, c, up=False) for z in zero_points], c), count, inner, r.size)
    zp_bits = _expand(np.array([z & _M64 for z in zero_points], np.uint64), count, inner, r.size)
    over, under = r > hi, r < lo
    inside = np.where(over | under | np.isnan(r), c(0), r)  # |inside| < 2^64
    mag = _exact_u64(np.abs(inside))
    with np.errstate(over="ignore"):
        val = np.where(inside < 0, np.uint64(0) - mag, mag) + zp_bits  # mod 2^64
    val = np.where(over, np.uint64(qmax & _M64), np.where(under, np.uint64(qmin & _M64), val))
    if bits(dtype) < 8:
        return val.view(np.int64)
    st = storage_dtype(dtype)
    return val.astype(np.dtype(f"u{st.itemsize}")).view(st)  # truncation mod 2^bits


def quantize(
    x: np.ndarray,
    dtype: str,
    scale: npt.ArrayLike,
    zero_point: npt.ArrayLike,
    *,
    round_mode: str = "nearest",
    seed: int | None = None,
    float_dtype: str | None = None,
    axis: int | None = None,
    group_size: int | None = None,
) -> np.ndarray:
    """q = clamp(round(c(x) · c(1 / c(scale))) + zero_point, qmin, qmax), c the
    compute type, the product one float operation in c, the clamp on exact
    integers; NaN → zero_point. round is half to even, or stochastic:
    floor(y) + (u < y - floor(y)) with u = uniforms(seed)[i], i the flat index.
    With ``axis`` or ``group_size``, scale and zero_point hold one value per
    set (see `layout`) and each element uses its set's. Results of 8 bits and
    more keep x's shape; 2/4-bit results are packed flat. FP8 types
    (zero_point 0) encode y instead: see `float8.encode`."""
    x = np.asarray(x)
    kind = _float_kind(x, float_dtype)
    count, inner, _ = layout(x.shape, axis, group_size)
    s, zps = _sets(kind, dtype, scale, zero_point, count, axis is not None or group_size is not None)
    c = compute_dtype(kind)
    xc = _to_compute(x, kind)
    with np.errstate(over="ignore", invalid="ignore"):
        y = xc * _expand(c(1) / s, count, inner, xc.size)
    if float8.is_float8(dtype):
        return float8.encode(y, dtype, lambda t: _round(t, round_mode, seed)).view(storage_dtype(dtype)).reshape(x.shape)
    q = _saturate(_round(y, round_mode, seed), dtype, zps, inner)
    if bits(dtype) < 8:
        return pack_bits(q, bits(dtype))
    return q.reshape(x.shape)
