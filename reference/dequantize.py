"""docs/semantics.md, *dequantize*: the exact difference q - zero_point
rounded once to the compute type, scaled, then stored or added."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from . import float8
from .parameters import _expand, _sets, layout
from .types import _M64, FLOAT_DTYPES, _from_compute, _to_compute, bits, compute_dtype, storage_dtype, unpack_bits


def _exact_difference(v: np.ndarray, zero_points: list[int], inner: int, c: type) -> np.ndarray:
    """float(v - zero_point) rounded to c, ties to even, for integer arrays v,
    with per-set zero points as in quantize's _saturate."""
    count = len(zero_points)
    if v.dtype.itemsize < 8:
        z = _expand(np.array(zero_points, np.int64), count, inner, v.size)
        d = v.astype(np.int64) - z  # exact: |d| < 2^33
        return d.astype(c)  # int64 → float conversion rounds to nearest, ties to even
    z = _expand(np.array([zp & _M64 for zp in zero_points], np.uint64), count, inner, v.size)
    u = v.view(np.uint64)
    ge = u >= z if v.dtype == np.uint64 else v >= z.view(np.int64)
    mag = np.where(ge, u - z, z - u)  # mod 2^64: the exact |v - zp|
    f: np.ndarray = mag.astype(c)
    return np.where(ge, f, -f)


def _values(q: np.ndarray, dtype: str, numel: int | None) -> np.ndarray:
    """Stored quantized data as an integer array of element values."""
    q = np.asarray(q)
    nb = bits(dtype)
    if float8.is_float8(dtype):
        return q.reshape(-1).view(np.uint8)
    if nb < 8:
        n = (8 // nb) * q.size if numel is None else numel
        return unpack_bits(q, n, nb, signed=dtype.startswith("i"))
    return q.reshape(-1).view(storage_dtype(dtype))


def dequantize(
    q: np.ndarray,
    dtype: str,
    scale: npt.ArrayLike,
    zero_point: npt.ArrayLike,
    *,
    numel: int | None = None,
    out_dtype: str = "float32",
    out: np.ndarray | None = None,
    reduce: str = "set",
    shape: tuple[int, ...] | None = None,
    axis: int | None = None,
    group_size: int | None = None,
) -> np.ndarray:
    """x = c(q - zero_point) · c(scale) in the compute type c of out_dtype
    (q - zero_point exact, then rounded to nearest; FP8: c(q)), rounded to out_dtype
    (set), or out = round(c(out) + x) (add). bfloat16 results are uint16 bits
    unless ``out`` is an ml_dtypes array. ``numel``: the element count of
    packed input (default: all fields). ``axis``/``group_size`` as in
    quantize, on the logical ``shape`` (default: flat). Returns a flat array
    unless ``out`` is given."""
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f"out_dtype: expected one of {FLOAT_DTYPES}, got {out_dtype!r}")
    if reduce not in ("set", "add"):
        raise ValueError(f"reduce: expected 'set' or 'add', got {reduce!r}")
    v = _values(q, dtype, numel)
    count, inner, _ = layout((v.size,) if shape is None else shape, axis, group_size)
    s, zps = _sets(out_dtype, dtype, scale, zero_point, count, axis is not None or group_size is not None)
    c = compute_dtype(out_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        d = float8.decode(v, dtype).astype(c) if float8.is_float8(dtype) else _exact_difference(v, zps, inner, c)
        x = d * _expand(s, count, inner, v.size)
        if reduce == "add":
            if out is None:
                raise ValueError("out: reduce='add' needs the array to add into")
            o = _to_compute(out, out_dtype)
            opposite_infs = np.isinf(o) & np.isinf(x) & (np.signbit(o) != np.signbit(x))
            x = o + x
            x[opposite_infs] = np.copysign(np.nan, -1)  # x86's default NaN (sign set), whatever this machine's is
    res = _from_compute(x, out_dtype)
    if out is not None:
        out.reshape(-1)[...] = res.view(out.dtype)  # same width: raw bits or the float type itself
        return out
    return res
