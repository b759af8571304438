"""docs/semantics.md, *Parameters* and *Per-channel and per-group
parameters*: what a valid scale and zero point are, and which set of them
each element of a call uses."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .types import compute_dtype, qrange


def _check_params(kind: str, dtype: str, scale: float, zero_point: int, index: int | None = None) -> np.floating:
    """scale in the compute type, checked, and the zero point checked; a
    set's `index` names it in the message (``scale[3]``)."""
    qmin, qmax = qrange(dtype)
    c = compute_dtype(kind)
    at = "" if index is None else f"[{index}]"
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        s = c(scale)
        inv = c(1) / s
    if not (np.isfinite(s) and s > 0 and np.isfinite(inv)):
        raise ValueError(f"scale{at}: expected a finite number > 0 whose reciprocal is finite in {np.dtype(c).name}, got {scale!r}")
    if not qmin <= zero_point <= qmax:
        raise ValueError(f"zero_point{at}: expected an integer in [{qmin}, {qmax}] for {dtype}, got {zero_point!r}")
    return s


def layout(shape: tuple[int, ...], axis: int | None = None, group_size: int | None = None) -> tuple[int, int, tuple[int, ...]]:
    """(count, inner, params_shape): element i (flat, row-major) uses parameter
    set (i // inner) % count. Per tensor: one set. ``axis=k``: one set per
    index along axis k (count = shape[k], inner = prod(shape[k+1:]), params
    shaped (shape[k],)). ``group_size=g``: one set per run of g elements along
    the last axis, which must be a multiple of g (count = numel / g, inner = g,
    params shaped shape[:-1] + (shape[-1] // g,))."""
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if axis is not None and group_size is not None:
        raise ValueError("axis, group_size: give one of them, not both")
    if axis is not None:
        if not shape or not -len(shape) <= axis < len(shape):
            raise ValueError(f"axis: expected an axis of a {len(shape)}-d array, got {axis}")
        k = axis % len(shape)
        return shape[k], int(np.prod(shape[k + 1 :], dtype=np.int64)) if k + 1 < len(shape) else 1, (shape[k],)
    if group_size is not None:
        if group_size < 1:
            raise ValueError(f"group_size: expected a positive integer, got {group_size}")
        if not shape or shape[-1] % group_size:
            last = shape[-1] if shape else "a 0-d array's"
            raise ValueError(f"group_size: the last axis ({last}) is not a multiple of group_size={group_size}")
        return n // group_size, group_size, shape[:-1] + (shape[-1] // group_size,)
    return 1, max(n, 1), ()


def _sets(kind: str, dtype: str, scale: npt.ArrayLike, zero_point: npt.ArrayLike, count: int, grouped: bool) -> tuple[np.ndarray, list[int]]:
    """The checked scales (compute type) and zero points of `count` sets;
    those of a grouped call are named by index."""
    scales = np.asarray(scale).reshape(-1)
    zps = np.asarray(zero_point).reshape(-1)
    if scales.size != count or zps.size != count:
        raise ValueError(f"scale, zero_point: expected {count} values each, got {scales.size} and {zps.size}")
    zp_list = [int(z) for z in zps]
    checked = [_check_params(kind, dtype, scales[k].item(), zp_list[k], k if grouped else None) for k in range(count)]
    return np.array(checked, compute_dtype(kind)), zp_list


def _expand(values: np.ndarray, count: int, inner: int, n: int) -> np.ndarray:
    """Per-set values repeated to one per element."""
    if count == 1:
        return np.broadcast_to(values[0], (n,))
    return values[(np.arange(n, dtype=np.int64) // inner) % count]
