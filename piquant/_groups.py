"""Per-channel (``axis=``) and per-group (``group_size=``) parameters: which
set each element uses, and the checks and conversions of parameter arrays."""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from . import _arrays
from ._dtypes import DataType

_new = tuple.__new__  # builds a NamedTuple without its generated __new__ (small calls)


class Layout(NamedTuple):
    """Element i (flat, row-major) uses parameter set (i // inner) % count."""

    count: int  # type: ignore[assignment]  # a field; shadows tuple.count, which nobody calls
    inner: int
    shape: tuple[int, ...]  # of the parameter arrays
    axis: int | None
    group_size: int | None


def _int_arg(value: Any, arg: str) -> int:
    if type(value) is int:  # without numbers' slow isinstance
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg}: expected an integer or None, got {type(value).__name__}")
    return int(value)


def layout(shape: tuple[int, ...], axis: Any, group_size: Any) -> Layout | None:
    """The grouping asked for on an array of ``shape``, or None (per tensor);
    a valid one seen before is looked up (calls repeat their shapes)."""
    if axis is None and group_size is None:
        return None
    # Keyed by plain ints only: True == 1 and numpy integers hash alike, and are checked each time.
    key = (shape, axis, group_size) if (type(axis) is int and group_size is None) or (axis is None and type(group_size) is int) else None
    lay = _LAYOUTS.get(key)
    if lay is None:
        lay = _layout(shape, axis, group_size)
        if key is not None:
            if len(_LAYOUTS) >= 4096:
                _LAYOUTS.clear()
            _LAYOUTS[key] = lay
    return lay


_LAYOUTS: dict[Any, Layout] = {}


def _layout(shape: tuple[int, ...], axis: Any, group_size: Any) -> Layout:
    if axis is not None and group_size is not None:
        raise ValueError("axis, group_size: give one of them, not both")
    ndim = len(shape)
    if axis is not None:
        k = _int_arg(axis, "axis")
        if not -ndim <= k < ndim:
            raise ValueError(f"axis: expected an axis of a {ndim}-d array (from {-ndim} to {ndim - 1}), got {k}")
        k %= ndim
        return _new(Layout, (shape[k], math.prod(shape[k + 1 :]), (shape[k],), k, None))
    g = _int_arg(group_size, "group_size")
    if g < 1:
        raise ValueError(f"group_size: expected a positive integer, got {g}")
    if ndim == 0:
        raise ValueError("group_size: groups run along the last axis; a 0-d array has none")
    if shape[-1] % g:
        raise ValueError(f"group_size: the last axis has {shape[-1]} elements, which is not a multiple of group_size={g}")
    return _new(Layout, (math.prod(shape) // g, g, shape[:-1] + (shape[-1] // g,), None, g))


class Sets(NamedTuple):
    """Parameter arrays as the backends take them (the native library checks
    their values; `check_values` does for the reference): numpy arrays, or
    the caller's own CPU tensors where they need no conversion (`as_numpy`
    views them), with their addresses. Made by `new_sets`."""

    scales: Any  # float32 or float64, contiguous, one per set (flat or of the parameter shape)
    zero_points: Any  # int64 (uint64 for UINT64), contiguous, one per set (as scales)
    count: int  # type: ignore[assignment]  # as in Layout
    inner: int
    scales_ptr: int
    zero_points_ptr: int


def new_sets(scales: Any, zero_points: Any, count: int, inner: int) -> Sets:
    """Sets of these arrays, addressed once, where a tensor's storage is
    checked to hold them (its memory is read where it lies)."""
    return _new(Sets, (scales, zero_points, count, inner, _arrays.address(scales, "scale"), _arrays.address(zero_points, "zero_point")))


def as_numpy(a: Any) -> np.ndarray:
    """A parameter array of Sets as numpy (a tensor's view of the same memory)."""
    return a if type(a) is np.ndarray else a.numpy()


def _numpy(a: Any, arg: str, integral: bool, qdt: DataType | None = None) -> np.ndarray:
    if isinstance(a, (list, tuple)):
        return _from_list(a, arg, integral, qdt)
    try:
        kind = _arrays.kind_of(a, arg)
    except TypeError:
        raise TypeError(f"{arg}: with axis= or group_size=, expected an array of per-set values, got {type(a).__name__}") from None
    if kind == _arrays.NUMPY:  # ml_dtypes' bfloat16 is exact in float32 (dtype.name is slow to read)
        if type(a) is not np.ndarray:  # a subclass (memmap, matrix): the plain array of its memory, which Sets and the results hold
            a = a.view(np.ndarray)
        return a.astype(np.float32) if a.dtype.type.__name__ == "bfloat16" else a
    _arrays.check_torch(a, arg)
    _arrays.address(a, arg)  # its storage checked before numpy reads it
    if a.requires_grad:  # each of these makes a tensor: only when needed
        a = a.detach()
    if a.is_neg():
        a = a.resolve_neg()
    torch = _arrays.torch_facts().module
    if a.dtype in (torch.bfloat16, torch.float16):  # exactly representable in float32, which numpy has
        a = a.float()
    if a.is_quantized or a.is_complex():
        raise TypeError(f"{arg}: expected {'integers' if integral else 'real numbers'}, got dtype {a.dtype}")
    return a.numpy()


def _from_list(a: Any, arg: str, integral: bool, qdt: DataType | None) -> np.ndarray:
    """A (nested) list of Python numbers, converted exactly: numpy would
    turn integers beyond int64 into float64, and bools into numbers."""
    try:
        obj = np.asarray(a, dtype=object)
    except ValueError:
        raise ValueError(f"{arg}: expected a rectangular list of numbers") from None
    flat = obj.reshape(-1)
    want = numbers.Integral if integral else numbers.Real
    for k, v in enumerate(flat):
        if isinstance(v, bool) or not isinstance(v, want):
            raise TypeError(f"{arg}[{k}]: expected {'an integer' if integral else 'a real number'}, got {type(v).__name__}")
    if not integral:
        with np.errstate(over="ignore"):
            return np.array([_float(v) for v in flat], np.float64).reshape(obj.shape)
    assert qdt is not None
    want = np.uint64 if qdt is DataType.UINT64 else np.int64
    info = np.iinfo(want)
    for k, v in enumerate(flat):
        if not info.min <= v <= info.max:  # the type's range is checked with the arrays'
            raise _zero_point_error(k, v, qdt)
    return np.array([int(v) for v in flat], want).reshape(obj.shape)


def _zero_point_error(k: int, value: Any, qdt: DataType) -> ValueError:
    return ValueError(f"zero_point[{k}]: expected an integer in [{qdt.qmin}, {qdt.qmax}] for {qdt.short_name}, got {value}")


def _float(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:  # an int beyond float64: check_values names it
        return math.inf


def _shaped(a: np.ndarray, lay: Layout, arg: str) -> np.ndarray:
    if a.shape != lay.shape and a.shape != (lay.count,):
        raise ValueError(f"{arg}: expected shape {lay.shape} (one value per {'channel' if lay.axis is not None else 'group'}), got {a.shape}")
    return a if a.ndim == 1 else a.reshape(-1)


def _scales(scale: Any, lay: Layout) -> np.ndarray:
    """Scales as a contiguous float32 or float64 array (no copy if already one)."""
    a = _shaped(_numpy(scale, "scale", False), lay, "scale")
    if a.dtype.kind not in "fiu":
        raise TypeError(f"scale: expected real numbers, got dtype {a.dtype}")
    if a.dtype in _FLOATS and a.flags.c_contiguous:  # used as given
        return a
    return np.ascontiguousarray(a, dtype=a.dtype if a.dtype in _FLOATS else np.float64)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _zero_points(zero_point: Any, qdt: DataType, lay: Layout) -> np.ndarray:
    """Zero points as contiguous int64 (uint64 for UINT64); an integer that
    int64 cannot hold is reported here, the range by check_values."""
    a = _shaped(_numpy(zero_point, "zero_point", True, qdt), lay, "zero_point")
    if a.dtype.kind not in "iu":
        raise TypeError(f"zero_point: expected integers, got dtype {a.dtype}")
    want = np.uint64 if qdt is DataType.UINT64 else np.int64
    if a.dtype == want and a.flags.c_contiguous:  # used as given
        return a
    if a.size:
        bad = (a < 0) if want is np.uint64 else (a > np.iinfo(np.int64).max if a.dtype == np.uint64 else np.zeros(a.shape, bool))
        if bad.any():
            k = int(np.argmax(bad))
            raise _zero_point_error(k, a[k], qdt)
    return np.ascontiguousarray(a, dtype=want)


def check_values(sets: Sets, fdt: DataType, qdt: DataType) -> None:
    """Every scale valid in the compute precision, every zero point in range
    (what the native library checks, with the same messages)."""
    scales = as_numpy(sets.scales).reshape(-1)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        c = scales.astype(np.float64 if fdt is DataType.F64 else np.float32)
        ok = (c > 0) & np.isfinite(c) & np.isfinite(c.dtype.type(1) / c)
    if not ok.all():
        k = int(np.argmin(ok))
        precision = "float64" if fdt is DataType.F64 else "float32"
        raise ValueError(f"scale[{k}]: expected a finite number > 0 whose reciprocal is finite in {precision}, got {float(scales[k])!r}")
    z = as_numpy(sets.zero_points).reshape(-1)
    bad = (z < qdt.qmin) | (z > qdt.qmax) if qdt is not DataType.UINT64 else np.zeros(z.shape, bool)
    if bad.any():
        k = int(np.argmax(bad))
        raise _zero_point_error(k, z[k], qdt)


def checked(scale: Any, zero_point: Any, fdt: DataType, qdt: DataType, lay: Layout) -> Sets:
    if scale is None or zero_point is None:
        raise ValueError("scale, zero_point: give both, or neither to compute them from x")
    if qdt is _UINT64:
        given = _as_given(scale, _F32, _F64, lay) and _as_given(zero_point, _U64, None, lay)
    else:
        given = _as_given(scale, _F32, _F64, lay) and _as_given(zero_point, _I64, None, lay)
    if given:  # what _scales and _zero_points would make of them
        return new_sets(scale, zero_point, lay.count, lay.inner)
    return new_sets(_scales(scale, lay), _zero_points(zero_point, qdt, lay), lay.count, lay.inner)


def _as_given(a: Any, dtype: Any, other: Any, lay: Layout) -> bool:
    """a is an array that the checks would pass through unchanged, or a
    tensor they would only view as one: one of the wanted dtypes (by
    identity: numpy's and torch's dtype objects are singletons),
    contiguous, of the parameter shape (Sets may hold it in either shape);
    a tensor also dense, on the CPU, without grad or the negative bit (a
    nested one is refused before its shape, which it cannot give)."""
    tp = type(a)
    if tp is np.ndarray:
        dt = a.dtype
        return (dt is dtype or dt is other) and (a.shape == lay.shape or a.shape == (lay.count,)) and a.flags.c_contiguous
    if tp is not _arrays._torch_tensor or tp is None:  # None: no tensor read yet
        return False
    dt = _arrays._torch_numpy.get(a.dtype)
    return ((dt is dtype or dt is other) and dt is not None and not a.is_nested and (a.shape == lay.shape or a.shape == (lay.count,))
            and a.is_cpu and a.layout is _arrays._strided and not a.requires_grad and not a.is_neg() and a.is_contiguous())


_F32, _F64, _I64, _U64 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.uint64)
_UINT64 = DataType.UINT64


def as_arrays(sets: Sets, fdt: DataType, lay: Layout, kind: str) -> tuple[Any, Any]:
    """The parameters as the caller sees them: scales in the compute precision
    and zero points, shaped like the parameter arrays, numpy or torch like x
    (a tensor given as it is needed is returned itself, as an array is)."""
    return _as(sets.scales, kind, lay, _F64 if fdt is DataType.F64 else _F32), _as(sets.zero_points, kind, lay, None)


def _as(a: Any, kind: str, lay: Layout, dtype: np.dtype | None) -> Any:
    if type(a) is not np.ndarray:  # a tensor of Sets: the caller's own
        if kind == _arrays.TORCH and (dtype is None or a.itemsize == dtype.itemsize):
            return a if a.shape == lay.shape else a.reshape(lay.shape)
        a = a.numpy()
    if dtype is not None and a.dtype is not dtype:
        a = a.astype(dtype)
    if a.shape != lay.shape:
        a = a.reshape(lay.shape)
    if kind == _arrays.TORCH:
        import torch

        return torch.from_numpy(a)
    return a
