"""docs/semantics.md, *compute_params*: parameters as torch's
MinMaxObserver computes them, per tensor or per set (*Per-channel and
per-group parameters*)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import float8
from .parameters import layout
from .types import _float_kind, _nearest_float, _to_compute, compute_dtype, qrange


class Params(NamedTuple):
    # float32 (float64 for float64 input) and an int; arrays of the params shape per set.
    scale: np.floating | np.ndarray
    zero_point: int | np.ndarray


def minmax(x: np.ndarray, *, float_dtype: str | None = None) -> tuple[np.floating, np.floating]:
    """Smallest and largest non-NaN value in the compute type; (+inf, -inf) if there is none."""
    x = np.asarray(x)
    xf = _to_compute(x, _float_kind(x, float_dtype))
    xf = xf[~np.isnan(xf)]
    c = xf.dtype.type
    if xf.size == 0:
        return c(np.inf), c(-np.inf)
    return xf.min(), xf.max()


def compute_params(
    x: np.ndarray,
    dtype: str,
    symmetric: bool = False,
    *,
    float_dtype: str | None = None,
    axis: int | None = None,
    group_size: int | None = None,
) -> Params:
    """scale and zero_point as torch's MinMaxObserver computes them, in the
    compute type c (float32, or float64 for float64 input): the range
    [lo, hi] = [min(min(x), 0), max(max(x), 0)] ignoring NaN (no non-NaN
    value: lo = hi = 0); width = c(qmax - qmin) (rounded to nearest);
    affine: scale = max((hi - lo) / width, eps), zero_point = clamp(qmin - round_half_even(lo / scale), qmin, qmax);
    symmetric: scale = max(max(-lo, hi) / (width / 2), eps), zero_point = 0 for signed
    types and (qmin + qmax + 1) // 2 for unsigned ones; eps is c's machine
    epsilon. An infinite value, or a range whose width overflows, raises.
    FP8 types (either scheme): scale = max(amax / max, tiny), 1 if amax = 0.
    With ``axis`` or ``group_size``, the same for each set's elements (see
    `layout`): arrays of the params shape, zero points int64 (uint64 for uint64)."""
    x = np.asarray(x)
    if axis is None and group_size is None:
        return _params_of(x, dtype, symmetric, float_dtype, "")
    count, inner, pshape = layout(x.shape, axis, group_size)
    sets = x.reshape(-1, count, inner) if x.size else np.empty((0, count, 1), x.dtype)
    ps = [_params_of(sets[:, k, :], dtype, symmetric, float_dtype, f" set {k}") for k in range(count)]
    c = compute_dtype(_float_kind(x, float_dtype))
    zdt = np.uint64 if dtype == "uint64" else np.int64
    return Params(np.array([p.scale for p in ps], c).reshape(pshape), np.array([p.zero_point for p in ps], zdt).reshape(pshape))


def _params_of(x: np.ndarray, dtype: str, symmetric: bool, float_dtype: str | None, which: str) -> Params:
    """Parameters of x's elements; `which` names a set in messages, as the C ABI does."""
    x = np.asarray(x)
    qmin, qmax = qrange(dtype)
    mn, mx = minmax(x, float_dtype=float_dtype)
    c = mn.dtype.type
    if mn == -np.inf or mx == np.inf:
        raise ValueError(f"x:{which} contains an infinite value; parameters need a finite range")
    if mn > mx:
        mn = mx = c(0)
    lo, hi = min(mn, c(0)), max(mx, c(0))
    if float8.is_float8(dtype):  # scale only, symmetric by nature
        return Params(float8.params(lo, hi, dtype), 0)
    width = _nearest_float(qmax - qmin, c)
    eps = np.finfo(c).eps
    with np.errstate(over="ignore"):
        if symmetric:
            scale = max(max(-lo, hi) / (width / c(2)), eps)
        else:
            scale = max((hi - lo) / width, eps)
    if not np.isfinite(scale):
        raise ValueError(f"x: the range (max - min) of{which} overflows float32" if which else "x: its range (max - min) overflows float32")
    if symmetric:
        zp = 0 if qmin < 0 else (qmin + qmax + 1) // 2
    else:
        zp = min(max(qmin - int(np.rint(lo / scale)), qmin), qmax)
    return Params(c(scale), zp)
