"""Checks of the scalar arguments shared by every entry point: scale,
zero_point and seed. Each raises an exception that names the argument."""

from __future__ import annotations

import ctypes
import math
import numbers
import secrets
from typing import Any

import numpy as np

from ._dtypes import DataType, resolve


def check_scale(scale: Any, fdt: DataType) -> float:
    """``scale`` in the compute precision of the float type (float64 for F64
    data, else float32), checked. The one check of a scalar scale: the
    reference backend's calls pass through it too."""
    if type(scale) is float:  # most calls pass the same few scales: each is checked once
        cache = _SCALES[fdt is _F64]
        s = cache.get(scale)  # NaN never hits: it is refused each time
        if s is None:
            s = _checked_scale(scale, scale, fdt)
            if len(cache) >= 4096:
                cache.clear()
            cache[scale] = s
        return s
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        per_set = " (per-channel or per-group scales need axis= or group_size=)" if hasattr(scale, "__len__") else ""
        raise TypeError(f"scale: expected a real number, got {type(scale).__name__}{per_set}")
    try:
        s = float(scale)
    except OverflowError:  # an int beyond float64
        s = math.inf
    return _checked_scale(s, scale, fdt)


_F64 = DataType.F64  # a member read through the Enum class costs three times a global
# Checked scales by value, for float64 (True) and float32 (False) data.
_SCALES: dict[bool, dict[float, float]] = {False: {}, True: {}}


def _checked_scale(s: float, scale: Any, fdt: DataType) -> float:
    if fdt is DataType.F64:
        ok = s > 0 and math.isfinite(s) and math.isfinite(1 / s)
    else:
        s = ctypes.c_float(s).value  # overflow gives inf
        ok = s > 0 and math.isfinite(s) and math.isfinite(ctypes.c_float(1 / s).value)
    if not ok:
        precision = "float64" if fdt is DataType.F64 else "float32"
        got = repr(scale) if len(repr(scale)) <= 40 else f"{repr(scale)[:20]}… ({type(scale).__name__})"
        raise ValueError(f"scale: expected a finite number > 0 whose {precision} reciprocal is finite, got {got}")
    return s


def check_zero_point(zero_point: Any, qdt: DataType) -> int:
    if type(zero_point) is int and qdt._qmin <= zero_point <= qdt._qmax:  # type: ignore[attr-defined]
        return zero_point
    if type(zero_point) is not int and (isinstance(zero_point, bool) or not isinstance(zero_point, numbers.Integral)):
        raise TypeError(f"zero_point: expected an integer, got {type(zero_point).__name__}")
    zp = int(zero_point)
    if not qdt.qmin <= zp <= qdt.qmax:
        raise ValueError(f"zero_point: expected an integer in [{qdt.qmin}, {qdt.qmax}] for {qdt.short_name}, got {zp}")
    return zp


def check_seed(seed: Any, mode: int) -> int:
    """The seed of stochastic rounding: a fresh one per call unless given."""
    if seed is None:
        return secrets.randbits(64) if mode == 1 else 0
    if type(seed) is not int and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed: expected an integer or None, got {type(seed).__name__}")
    if not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"seed: expected an integer in [0, 2**64), got {seed}")
    return int(seed)


def check_shape(shape: Any, arg: str = "shape") -> tuple[int, ...]:
    """A shape as numpy takes one: an integer or a sequence of them, none negative."""
    if type(shape) is tuple:  # the common case, without numbers' slow isinstance
        for d in shape:
            if type(d) is not int or d < 0:
                break
        else:
            return shape
    try:
        dims = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape) if not isinstance(shape, (str, bytes)) else None
    except TypeError:
        dims = None
    if dims is None:
        raise TypeError(f"{arg}: expected a tuple of integers, got {type(shape).__name__}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"{arg}: expected a tuple of integers, got an element of type {type(d).__name__}")
        if d < 0:
            raise ValueError(f"{arg}: expected non-negative sizes, got {shape}")
    return tuple(int(d) for d in dims)


def per_tensor_args(dtype: Any, round_mode: Any, scale: Any, zero_point: Any, fdt: DataType) -> tuple[DataType, int, float, int]:
    """The quantized type, round mode, scale and zero point of a per-tensor
    call on ``fdt`` data, checked in that order; a combination seen before
    is looked up (most calls repeat the last one)."""
    if type(scale) in _NUMPY_FLOATS:  # as the Python number it equals exactly, which the lookup takes
        scale = float(scale)
    if type(zero_point) in _NUMPY_INTS:
        zero_point = int(zero_point)
    key = (dtype, round_mode, scale, zero_point, fdt) if type(scale) is float and type(zero_point) is int else None
    try:
        hit = _ARGS.get(key)
    except TypeError:  # an unhashable dtype or round mode: checked below, and refused
        key = hit = None
    if hit is not None:
        return hit
    from ._context import round_mode_value  # _context imports this module

    qdt = resolve(dtype, "dtype", quantized=True)
    args = (qdt, round_mode_value(round_mode), check_scale(scale, fdt), check_zero_point(zero_point, qdt))
    if key is not None:
        if len(_ARGS) >= 4096:
            _ARGS.clear()
        _ARGS[key] = args
    return args


_ARGS: dict[Any, tuple[DataType, int, float, int]] = {}
# numpy's scalar types that float() or int() converts exactly (item() costs ten times more).
_NUMPY_FLOATS = frozenset(np.dtype(c).type for c in "efd")
_NUMPY_INTS = frozenset(np.dtype(c).type for c in "bhilqBHILQ")
