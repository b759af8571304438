"""docs/semantics.md, *FP8 types*: float8_e4m3fn and float8_e5m2 as
quantized types with a scale and no zero point. `encode` turns compute-type
values y = c(x · inv) into FP8 codes (saturating, half to even or
stochastic), `decode` reads codes back as float32."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

try:  # numpy has no float8 of its own; codes are uint8 without ml_dtypes
    import ml_dtypes

    _E4M3: np.dtype = np.dtype(ml_dtypes.float8_e4m3fn)
    _E5M2: np.dtype = np.dtype(ml_dtypes.float8_e5m2)
except ImportError:  # pragma: no cover - depends on the environment
    _E4M3 = _E5M2 = np.dtype(np.uint8)


class Format(NamedTuple):
    mbits: int  # stored mantissa bits
    emin: int  # exponent of the smallest normal
    max: float  # largest finite value
    nan: int  # the code of NaN (without the sign)
    inf: int | None  # the code of +inf, if the format has one
    storage: np.dtype  # ml_dtypes' type, or uint8 codes without it


FORMATS = {
    "float8_e4m3fn": Format(3, -6, 448.0, 0x7F, None, _E4M3),
    "float8_e5m2": Format(2, -14, 57344.0, 0x7F, 0x7C, _E5M2),
}


def is_float8(dtype: str) -> bool:
    return dtype in FORMATS


def encode(y: np.ndarray, dtype: str, round_int: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """FP8 codes (uint8) of compute-type values y: see `encode_minifloat`."""
    f = FORMATS[dtype]
    return encode_minifloat(y, f.mbits, f.emin, f.max, f.nan, 7, round_int)


def encode_minifloat(y: np.ndarray, mbits: int, emin: int, top: float, nan: int, sign_bit: int,
                     round_int: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Codes (uint8) of a small binary float format with `mbits` mantissa
    bits, smallest normal exponent `emin`, largest value `top`: |y| clamped
    to top, then rounded on the grid of its binade, t = |y| · 2^(m - e) with
    e = max(floor(log2 |y|), emin) (exact), r = round_int(t);
    code = sign << sign_bit | ((e - emin) << m) + r. NaN: its sign | nan."""
    c = y.dtype.type
    isnan = np.isnan(y)
    sign = np.signbit(y).astype(np.uint8) << np.uint8(sign_bit)
    a = np.minimum(np.where(isnan, c(0), np.abs(y)), c(top))
    _, e = np.frexp(a)  # a = m · 2^e, m in [0.5, 1); 0 → e = 0
    e = np.maximum(np.where(a == 0, emin, e.astype(np.int64) - 1), emin)
    t = np.ldexp(a, (mbits - e).astype(np.int32))  # exact: a power of two, in range
    r = round_int(t).astype(np.int64)  # 0 … 2^(m+1): on a's grid, never past top
    code = (((e - emin) << mbits) + r).astype(np.uint8)
    return np.where(isnan, np.uint8(nan), code) | sign


def _table(dtype: str) -> np.ndarray:
    """float32 of every code: ±r · 2^(e - m) as encode builds it; NaN codes
    are the quiet NaN with their sign, E5M2's 0x7C ±inf."""
    f = FORMATS[dtype]
    codes = np.arange(256, dtype=np.int64)
    mag = codes & 0x7F
    field = mag >> f.mbits
    frac = mag & ((1 << f.mbits) - 1)
    e = np.maximum(field - 1, 0) + f.emin  # subnormals (field 0) share emin
    r = np.where(field == 0, frac, frac + (1 << f.mbits))
    v = np.ldexp(r.astype(np.float64), e - f.mbits).astype(np.float32)
    bits = v.view(np.uint32)
    if f.inf is not None:
        bits = np.where(mag == f.inf, np.uint32(0x7F800000), bits)
        bits = np.where(mag > f.inf, np.uint32(0x7FC00000), bits)
    else:
        bits = np.where(mag == f.nan, np.uint32(0x7FC00000), bits)
    return (bits | ((codes >> 7).astype(np.uint32) << np.uint32(31))).astype(np.uint32).view(np.float32)


_TABLES = {name: _table(name) for name in FORMATS}


def decode(codes: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values of FP8 codes (exact; NaN codes give ±0x7FC00000)."""
    return _TABLES[dtype][np.asarray(codes).reshape(-1).view(np.uint8)]


def params(lo: np.floating, hi: np.floating, dtype: str) -> np.floating:
    """The scale of a range [lo, hi] ∋ 0 of finite values in c: amax / max,
    at least c's smallest normal (whose reciprocal is finite); 1 if amax = 0."""
    c = lo.dtype.type
    amax = max(-lo, hi)
    if amax == 0:
        return c(1)
    return max(c(amax / c(FORMATS[dtype].max)), np.finfo(c).tiny)
