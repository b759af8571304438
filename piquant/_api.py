"""quantize, dequantize and compute_params for numpy arrays and torch tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _arrays, _fast, _groups
from ._checks import check_scale, check_seed, check_shape, check_zero_point
from ._context import Context, reduce_op_value, resolve_context, round_mode_value
from ._dtypes import TORCH_QUANTIZED, DataType, resolve


class QuantParams(NamedTuple):
    """Quantization parameters: ``q = round(x / scale) + zero_point``; numbers
    per tensor, arrays (numpy or torch, like x) per channel or group."""

    scale: Any
    zero_point: Any


@dataclass(frozen=True)
class Quantized:
    """A quantized array with what is needed to read it back.

    ``data`` is a numpy array or torch tensor of the storage type with the
    logical ``shape`` for types of 8 bits and more, a flat uint8 array of
    packed bytes for 2- and 4-bit types (first element in the lowest bits),
    or a torch quantized tensor when one was asked for. ``scale`` and
    ``zero_point`` are numbers, or arrays with one value per channel along
    ``axis`` or per ``group_size`` run of the last axis.
    """

    data: Any
    dtype: DataType
    shape: tuple[int, ...]
    scale: Any
    zero_point: Any
    axis: int | None = None
    group_size: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def params(self) -> QuantParams:
        return QuantParams(self.scale, self.zero_point)

    def dequantize(self, dtype: Any = None, *, out: Any = None, reduce: str = "set", ctx: Context | None = None) -> Any:
        return dequantize(self, dtype, out=out, reduce=reduce, ctx=ctx)

    @classmethod
    def _make(cls, data: Any, dtype: DataType, shape: tuple[int, ...], scale: float, zero_point: int) -> Quantized:
        """What the generated __init__ does, at a third of its cost (small calls)."""
        q = object.__new__(cls)
        fields = {"data": data, "dtype": dtype, "shape": shape, "scale": scale, "zero_point": zero_point, "axis": None, "group_size": None}
        object.__setattr__(q, "__dict__", fields)
        return q


def _params(backend: Any, src: _arrays.Buffer, qdt: DataType, scale: Any, zero_point: Any, symmetric: bool) -> tuple[float, int]:
    """Checked parameters, computed from the data when neither is given."""
    zero_point = _float8_zero_point(qdt, scale, zero_point)
    if scale is None and zero_point is None:
        scale, zero_point = backend.compute_params(src.ptr, src.dtype, src.numel, qdt, bool(symmetric))
    elif scale is None or zero_point is None:
        raise ValueError("scale, zero_point: give both, or neither to compute them from x")
    return check_scale(scale, src.dtype), check_zero_point(zero_point, qdt)


def _float8_zero_point(qdt: DataType, scale: Any, zero_point: Any) -> Any:
    """FP8 types take a scale alone: their zero point defaults to 0."""
    return 0 if zero_point is None and scale is not None and qdt.is_float8 else zero_point


def _computed_sets(backend: Any, src: _arrays.Buffer, qdt: DataType, symmetric: bool, lay: _groups.Layout) -> _groups.Sets:
    if src.numel == 0:  # every set is empty: each gets the parameters of no values
        s, zp = backend.compute_params(src.ptr, src.dtype, 0, qdt, bool(symmetric))
        zdt = np.uint64 if qdt is DataType.UINT64 else np.int64
        return _groups.Sets(np.full(lay.count, s), np.full(lay.count, zp, zdt), lay.count, max(lay.inner, 1))
    return backend.compute_params_sets(src.ptr, src.dtype, src.numel, qdt, bool(symmetric), lay.count, lay.inner)


def _sets(backend: Any, src: _arrays.Buffer, qdt: DataType, scale: Any, zero_point: Any, symmetric: bool, lay: _groups.Layout) -> _groups.Sets:
    """Checked per-set parameters, computed from the data when neither is given."""
    if scale is None and zero_point is None:
        return _computed_sets(backend, src, qdt, symmetric, lay)
    if zero_point is None and qdt.is_float8:
        zero_point = np.zeros(lay.count, np.int64)
    return _groups.checked(scale, zero_point, src.dtype, qdt, lay)


def compute_params(
    x: Any, dtype: Any = "uint8", *, symmetric: bool = False, axis: int | None = None, group_size: int | None = None, ctx: Context | None = None
) -> QuantParams:
    """scale and zero_point for quantizing ``x`` to ``dtype``, as
    torch.ao.quantization.MinMaxObserver computes them (affine by default,
    ``symmetric=True`` for the symmetric scheme), in float32 (float64 for
    float64 input). NaN is ignored; an infinite value raises ValueError.
    ``axis=k`` computes them per channel along axis k (as
    PerChannelMinMaxObserver), ``group_size=g`` per run of g elements along
    the last axis; both give arrays (numpy or torch, like x)."""
    backend = resolve_context(ctx)
    src = _arrays.read(x, "x", quantized=False)
    qdt = resolve(dtype, "dtype", quantized=True)
    lay = _groups.layout(src.shape, axis, group_size)
    if lay is not None:
        return QuantParams(*_groups.as_arrays(_computed_sets(backend, src, qdt, symmetric, lay), src.dtype, lay, src.kind))
    scale, zp = backend.compute_params(src.ptr, src.dtype, src.numel, qdt, bool(symmetric))
    return QuantParams(scale, zp)


def _torch_quantized_dtype(dtype: Any) -> Any:
    """dtype itself if it is one of torch's quantized tensor types, else None."""
    if type(dtype).__module__ == "torch" and str(dtype).removeprefix("torch.") in TORCH_QUANTIZED:
        return dtype
    return None


def quantize(
    x: Any,
    dtype: Any = "uint8",
    *,
    scale: Any = None,
    zero_point: Any = None,
    symmetric: bool = False,
    round_mode: Any = "nearest",
    seed: int | None = None,
    axis: int | None = None,
    group_size: int | None = None,
    out: Any = None,
    ctx: Context | None = None,
) -> Quantized:
    """Quantize a float array (numpy or torch; float32, bfloat16, float16 or
    float64) to ``dtype`` (uint2 … int64).

    ``q = clamp(round(x * (1/scale)) + zero_point, qmin, qmax)``, rounding half
    to even or, with ``round_mode="stochastic"``, up with probability equal to
    the fraction (``seed`` makes it reproducible; None draws a fresh seed per
    call). NaN becomes zero_point, ±inf the ends of the range. Without
    ``scale`` and ``zero_point`` both come from :func:`compute_params`.
    ``out``, if given, must be a contiguous, writable array of the storage
    dtype and size (packed 2/4-bit types: ceil(n·bits/8) uint8 bytes). A
    torch quantized ``dtype`` (torch.quint8, qint8, qint32, quint4x2,
    quint2x4) makes ``data`` a torch quantized tensor carrying the
    parameters (per channel with ``axis``). ``axis=k`` uses one scale and
    zero point per index along axis k, ``group_size=g`` one per run of g
    elements along the last axis (which g must divide); given parameters are
    then arrays of that shape, computed ones are returned as such. Returns
    a :class:`Quantized`.
    """
    if out is not None and scale is not None and axis is None and group_size is None:
        done = _fast.run(_fast.QUANTIZE, x, dtype, scale, zero_point, round_mode, "set", seed, out, ctx)
        if done is not None:
            return Quantized._make(out, done[0], tuple(x.shape), done[1], done[2])
    backend = resolve_context(ctx)
    src = _arrays.read(x, "x", quantized=False)
    qdt = resolve(dtype, "dtype", quantized=True)
    mode = round_mode_value(round_mode)
    lay = _groups.layout(src.shape, axis, group_size)
    if lay is None:
        s, zp = _params(backend, src, qdt, scale, zero_point, symmetric)
    else:
        sets = _sets(backend, src, qdt, scale, zero_point, symmetric, lay)
    torch_qdtype = _torch_quantized_dtype(dtype)
    if torch_qdtype is not None:
        if src.kind != _arrays.TORCH:
            raise TypeError(f"dtype: {dtype} makes a torch quantized tensor; x must be a torch tensor")
        if out is not None:
            raise ValueError(f"out: not supported with dtype={dtype}; pass dtype='{qdt.short_name}' to write plain integers into out")
        import torch

        if lay is None:
            data = torch._empty_affine_quantized(src.shape, scale=s, zero_point=zp, dtype=torch_qdtype)
        elif lay.axis is None:
            raise ValueError(f"group_size: torch quantized tensors have no per-group form; pass dtype='{qdt.short_name}' for plain integers")
        else:
            scales, zps = _groups.as_arrays(sets, src.dtype, lay, _arrays.TORCH)
            data = torch._empty_per_channel_affine_quantized(src.shape, scales=scales.double(), zero_points=zps, axis=lay.axis, dtype=torch_qdtype)
        dst = _arrays.Buffer(data, _arrays.TORCH, data.data_ptr(), qdt, src.shape, src.numel)
    elif out is None:
        dst = _arrays.empty(src.kind, src.shape, qdt)
    else:
        dst = _arrays.write(out, src.kind, qdt, src.shape, src.numel)
        _arrays.check_no_overlap(src, dst)
    if lay is None:
        backend.quantize(src.ptr, src.dtype, dst.ptr, qdt, src.numel, s, zp, mode, check_seed(seed, mode))
        return Quantized._make(dst.array, qdt, tuple(src.shape), s, zp)
    if src.numel:
        backend.quantize_sets(src.ptr, src.dtype, dst.ptr, qdt, src.numel, sets, mode, check_seed(seed, mode))
    else:
        _groups.check_values(sets, src.dtype, qdt)
    scales, zps = _groups.as_arrays(sets, src.dtype, lay, src.kind)
    return Quantized(dst.array, qdt, tuple(src.shape), scales, zps, lay.axis, lay.group_size)


def fake_quantize(
    x: Any,
    dtype: Any = "uint8",
    *,
    scale: Any = None,
    zero_point: Any = None,
    symmetric: bool = False,
    round_mode: Any = "nearest",
    seed: int | None = None,
    reduce: Any = "set",
    axis: int | None = None,
    group_size: int | None = None,
    out: Any = None,
    ctx: Context | None = None,
) -> Any:
    """``dequantize(quantize(x, dtype, ...))`` in one pass, bit for bit, without
    the integers: an array of x's float type and shape. ``reduce="add"`` adds
    the result into ``out``. ``out`` may be ``x`` itself (in place); any other
    overlap with ``x`` is an error. ``axis``/``group_size`` as in quantize."""
    if out is not None and scale is not None and axis is None and group_size is None:
        if _fast.run(_fast.FAKE_QUANTIZE, x, dtype, scale, zero_point, round_mode, reduce, seed, out, ctx) is not None:
            return out
    backend = resolve_context(ctx)
    src = _arrays.read(x, "x", quantized=False)
    qdt = resolve(dtype, "dtype", quantized=True)
    mode = round_mode_value(round_mode)
    op = reduce_op_value(reduce)
    lay = _groups.layout(src.shape, axis, group_size)
    if lay is None:
        s, zp = _params(backend, src, qdt, scale, zero_point, symmetric)
    else:
        sets = _sets(backend, src, qdt, scale, zero_point, symmetric, lay)
    if out is None:
        if op == 1:
            raise ValueError("out: reduce='add' needs the array to add into")
        dst = _arrays.empty(src.kind, src.shape, src.dtype)
    else:
        dst = _arrays.write(out, src.kind, src.dtype, src.shape, src.numel)
        if dst.ptr != src.ptr:
            _arrays.check_no_overlap(src, dst)
    if lay is None:
        backend.fake_quantize(src.ptr, src.dtype, dst.ptr, src.numel, qdt, s, zp, mode, check_seed(seed, mode), op)
    elif src.numel:
        backend.fake_quantize_sets(src.ptr, src.dtype, dst.ptr, src.numel, qdt, sets, mode, check_seed(seed, mode), op)
    else:
        _groups.check_values(sets, src.dtype, qdt)
    return dst.array


class _Source(NamedTuple):
    buf: _arrays.Buffer
    dtype: DataType
    scale: Any
    zero_point: Any
    shape: tuple[int, ...]
    axis: int | None = None
    group_size: int | None = None


def _source(q: Any, qdtype: Any, scale: Any, zero_point: Any, shape: Any, axis: Any, group_size: Any) -> _Source:
    """The quantized buffer, its type, parameters, logical shape and grouping,
    from a Quantized, a torch quantized tensor or a raw integer array."""
    if isinstance(q, Quantized):
        restated = (scale, zero_point, qdtype, shape, axis, group_size)
        if any(v is not None for v in restated):
            raise ValueError("q: a Quantized carries its own dtype, shape, scale, zero_point and grouping; do not restate them")
        qdt = resolve(q.dtype, "q.dtype", quantized=True)
        logical = check_shape(q.shape, "q.shape")
        numel = math.prod(logical)
        buf = _arrays.read(q.data, "q.data", quantized=True)
        _arrays.check_data(buf, qdt, numel, "q.data")
        return _Source(buf._replace(dtype=qdt, numel=numel), qdt, q.scale, q.zero_point, logical, q.axis, q.group_size)
    if _arrays.kind_of(q, "q") == _arrays.TORCH and q.is_quantized:
        import torch

        if any(v is not None for v in (scale, zero_point, axis, group_size)):
            raise ValueError("q: a torch quantized tensor carries its parameters; do not restate them")
        buf = _arrays.read(q, "q", quantized=True)
        scheme = q.qscheme()
        if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            return _Source(buf, buf.dtype, float(q.q_scale()), int(q.q_zero_point()), buf.shape)
        if scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
            return _Source(buf, buf.dtype, q.q_per_channel_scales(), q.q_per_channel_zero_points(), buf.shape, q.q_per_channel_axis())
        raise NotImplementedError(f"q: quantization scheme {scheme} is not supported (its zero points are floats)")
    buf = _arrays.read(q, "q", quantized=True)
    qdt = buf.dtype if qdtype is None else resolve(qdtype, "qdtype", quantized=True)
    if shape is not None:
        shape = check_shape(shape)
    if qdt.is_packed:
        if buf.dtype is not DataType.UINT8:
            raise TypeError(f"q: packed {qdt.short_name} data must be a uint8 array, got {buf.array.dtype}")
        numel = 8 // qdt.bit_size * buf.numel if shape is None else math.prod(shape)
        if qdt.nbytes(numel) != buf.numel:
            raise ValueError(f"shape: {numel} {qdt.short_name} elements need {qdt.nbytes(numel)} bytes, q has {buf.numel}")
        logical = (numel,) if shape is None else shape
    else:
        if qdt is not buf.dtype:
            raise TypeError(f"qdtype: {qdt.short_name} does not match q's dtype {buf.array.dtype}")
        logical = buf.shape if shape is None else shape
        if math.prod(logical) != buf.numel:
            raise ValueError(f"shape: {logical} has {math.prod(logical)} elements, q has {buf.numel}")
    if zero_point is None and qdt.is_float8:
        zero_point = 0 if axis is None and group_size is None else np.zeros(np.shape(scale), np.int64)
    if scale is None or zero_point is None:
        raise ValueError("scale, zero_point: required to dequantize a plain integer array")
    return _Source(buf._replace(dtype=qdt, numel=math.prod(logical)), qdt, scale, zero_point, logical, axis, group_size)


def dequantize(
    q: Any,
    dtype: Any = None,
    *,
    scale: Any = None,
    zero_point: Any = None,
    qdtype: Any = None,
    shape: tuple[int, ...] | None = None,
    axis: int | None = None,
    group_size: int | None = None,
    reduce: Any = "set",
    out: Any = None,
    ctx: Context | None = None,
) -> Any:
    """Dequantize to a float array of the logical shape: float32 by default,
    or ``dtype`` (bfloat16, float16, float64), or ``out``'s type.

    ``q`` is a :class:`Quantized` (nothing to restate), a torch quantized
    tensor, or a plain integer array with ``scale`` and ``zero_point`` (and
    ``qdtype`` such as "uint4"/"int2" plus ``shape`` for packed uint8 data;
    per-channel/per-group arrays of parameters with ``axis``/``group_size``).
    ``x = c(q - zero_point) * scale`` in the output's compute precision c;
    ``reduce="add"`` adds into ``out`` instead of overwriting it (``out`` is
    then required).
    """
    if out is not None and dtype is None and shape is None and axis is None and group_size is None:
        if type(q) is Quantized:
            ungrouped = q.axis is None and q.group_size is None
            if ungrouped and scale is None and zero_point is None and qdtype is None and q.shape == getattr(out, "shape", None):
                if _fast.run(_fast.DEQUANTIZE, q.data, q.dtype, q.scale, q.zero_point, "nearest", reduce, None, out, ctx, q.numel) is not None:
                    return out
        elif scale is not None:
            if _fast.run(_fast.DEQUANTIZE, q, qdtype, scale, zero_point, "nearest", reduce, None, out, ctx) is not None:
                return out
    backend = resolve_context(ctx)
    src, qdt, scale, zero_point, logical, axis, group_size = _source(q, qdtype, scale, zero_point, shape, axis, group_size)
    lay = _groups.layout(logical, axis, group_size)
    op = reduce_op_value(reduce)
    fdt = None if dtype is None else resolve(dtype, "dtype", quantized=False)
    if out is None:
        if op == 1:
            raise ValueError("out: reduce='add' needs the array to add into")
        dst = _arrays.empty(src.kind, logical, fdt or DataType.F32)
    else:
        out_dt = _arrays.dtype_of(out, _arrays.kind_of(out, "out"), "out", quantized=False)
        if fdt is not None and fdt is not out_dt:
            raise ValueError(f"dtype: {fdt.short_name} does not match out's dtype {out.dtype}")
        dst = _arrays.write(out, src.kind, out_dt, logical, src.numel)
        _arrays.check_no_overlap(src, dst)
    if lay is not None:
        sets = _groups.checked(scale, zero_point, dst.dtype, qdt, lay)
        if src.numel:
            backend.dequantize_sets(src.ptr, qdt, dst.ptr, dst.dtype, src.numel, sets, op)
        else:
            _groups.check_values(sets, dst.dtype, qdt)
        return dst.array
    s = check_scale(scale, dst.dtype)
    zp = check_zero_point(zero_point, qdt)
    backend.dequantize(src.ptr, qdt, dst.ptr, dst.dtype, src.numel, s, zp, op)
    return dst.array
