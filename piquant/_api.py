"""quantize, dequantize and compute_params for numpy arrays and torch tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _arrays, _groups
from ._arrays import Buffer
from ._backend import DEQUANTIZE, FAKE_QUANTIZE, HELD_MAX, QUANTIZE, pack_per_tensor
from ._checks import check_seed, check_shape, per_tensor_args
from ._context import _REDUCE_NAMES, Context, reduce_op_value, resolve_context, round_mode_value
from ._dtypes import TORCH_QUANTIZED_TYPES, DataType, resolve

_new = tuple.__new__  # builds a NamedTuple without its generated __new__ (small calls)
_F32 = DataType.F32  # a member read through the Enum class costs three times a global
_2_63, _2_64 = 1 << 63, 1 << 64  # a uint64 zero point travels as the int64 of its bits (DataType.raw_zero_point)


class QuantParams(NamedTuple):
    """Quantization parameters: ``q = round(x / scale) + zero_point``; numbers
    per tensor, arrays (numpy or torch, like x) per channel or group."""

    scale: Any
    zero_point: Any


@dataclass(frozen=True, init=False)
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

    def __init__(self, data: Any, dtype: DataType, shape: tuple[int, ...], scale: Any, zero_point: Any, axis: int | None = None,
                 group_size: int | None = None) -> None:
        # What the generated frozen __init__ does (one object.__setattr__ a
        # field), at two thirds of its cost: small calls build one per call.
        d = self.__dict__
        d["data"] = data
        d["dtype"] = dtype
        d["shape"] = shape
        d["scale"] = scale
        d["zero_point"] = zero_point
        d["axis"] = axis
        d["group_size"] = group_size

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def params(self) -> QuantParams:
        return _new(QuantParams, (self.scale, self.zero_point))

    def dequantize(self, dtype: Any = None, *, out: Any = None, reduce: str = "set", ctx: Context | None = None) -> Any:
        return dequantize(self, dtype, out=out, reduce=reduce, ctx=ctx)


def _computed(backend: Any, src: Buffer, qdt: DataType, scale: Any, zero_point: Any, symmetric: bool) -> tuple[float, int]:
    """Parameters computed from the data, where one of scale and zero_point is
    missing; an FP8 type takes a scale alone (its zero point is 0)."""
    if scale is None and zero_point is None:
        _, _, ptr, fdt, _, numel = src
        return backend.compute_params(ptr, fdt, numel, qdt, bool(symmetric))
    if zero_point is None and qdt.is_float8:
        return scale, 0
    raise ValueError("scale, zero_point: give both, or neither to compute them from x")


def _computed_sets(backend: Any, src: Buffer, qdt: DataType, symmetric: bool, lay: _groups.Layout) -> _groups.Sets:
    _, _, ptr, fdt, _, numel = src
    if numel == 0:  # every set is empty: each gets the parameters of no values
        s, zp = backend.compute_params(ptr, fdt, 0, qdt, bool(symmetric))
        zdt = np.uint64 if qdt is DataType.UINT64 else np.int64
        return _groups.new_sets(np.full(lay.count, s), np.full(lay.count, zp, zdt), lay.count, max(lay.inner, 1))
    return backend.compute_params_sets(ptr, fdt, numel, qdt, bool(symmetric), lay.count, lay.inner)


def _sets(backend: Any, src: Buffer, qdt: DataType, scale: Any, zero_point: Any, symmetric: bool, lay: _groups.Layout) -> _groups.Sets:
    """Checked per-set parameters, computed from the data when neither is given."""
    if scale is None and zero_point is None:
        return _computed_sets(backend, src, qdt, symmetric, lay)
    if zero_point is None and qdt.is_float8:
        zero_point = np.zeros(lay.count, np.int64)
    return _groups.checked(scale, zero_point, src[3], qdt, lay)


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
    backend = (Context._default or Context.get())._backend if ctx is None else resolve_context(ctx)  # a default context is never closed
    src = _arrays.read(x, "x", quantized=False)
    _, kind, ptr, fdt, shape, numel = src
    qdt = resolve(dtype, "dtype", quantized=True)
    lay = _groups.layout(shape, axis, group_size)
    if lay is not None:
        return _new(QuantParams, _groups.as_arrays(_computed_sets(backend, src, qdt, symmetric, lay), fdt, lay, kind))
    return _new(QuantParams, backend.compute_params(ptr, fdt, numel, qdt, bool(symmetric)))


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
    backend = (Context._default or Context.get())._backend if ctx is None else resolve_context(ctx)  # a default context is never closed
    src = _arrays.read(x, "x", quantized=False)
    _, kind, src_ptr, fdt, shape, numel = src
    if axis is None and group_size is None:
        lay = None
        if scale is None or zero_point is None:
            scale, zero_point = _computed(backend, src, resolve(dtype, "dtype", quantized=True), scale, zero_point, symmetric)
        qdt, mode, s, zp = per_tensor_args(dtype, round_mode, scale, zero_point, fdt)
    else:
        qdt = resolve(dtype, "dtype", quantized=True)
        mode = round_mode_value(round_mode)
        lay = _groups.layout(shape, axis, group_size)
        assert lay is not None  # axis or group_size was given
        sets = _sets(backend, src, qdt, scale, zero_point, symmetric, lay)
    if type(dtype) is not str and dtype in TORCH_QUANTIZED_TYPES:  # a torch quantized tensor is asked for
        dst_array = _torch_quantized(dtype, qdt, kind, shape, s if lay is None else None, zp if lay is None else None, sets if lay else None,
                                     fdt, lay, out)
        dst_ptr = dst_array.data_ptr()  # new, so its storage is whole and its offset 0 (a packed one's too)
    elif out is None:
        dst_array, dst_ptr = _arrays.empty(kind, shape, qdt, numel=numel)
    else:
        dst_array, dst_ptr = _arrays.write(out, src, qdt, numel)
    if lay is None:
        execute = backend.execute_held if numel <= HELD_MAX else backend.execute
        status = execute(backend.handle, pack_per_tensor(QUANTIZE, fdt._value_, qdt._value_, mode, 0, 0, src_ptr, dst_ptr, numel, s,
                                                         zp if zp < _2_63 else zp - _2_64, 0 if seed is None and mode == 0 else check_seed(seed, mode)))
        if status:
            backend.fail(status)
        return Quantized(dst_array, qdt, shape, s, zp)
    if numel:
        backend.run_sets(QUANTIZE, fdt, qdt, src_ptr, dst_ptr, numel, mode, 0, check_seed(seed, mode), sets)
    else:
        _groups.check_values(sets, fdt, qdt)
    scales, zps = _groups.as_arrays(sets, fdt, lay, kind)
    return Quantized(dst_array, qdt, shape, scales, zps, lay.axis, lay.group_size)


def _torch_quantized(dtype: Any, qdt: DataType, kind: str, shape: tuple[int, ...], s: float | None, zp: int | None,
                     sets: _groups.Sets | None, fdt: DataType, lay: _groups.Layout | None, out: Any) -> Any:
    """A new torch quantized tensor of ``dtype`` (torch.quint8 …) carrying
    the parameters, for quantize to write."""
    if kind != _arrays.TORCH:
        raise TypeError(f"dtype: {dtype} makes a torch quantized tensor; x must be a torch tensor")
    if out is not None:
        raise ValueError(f"out: not supported with dtype={dtype}; pass dtype='{qdt.short_name}' to write plain integers into out")
    torch = _arrays.torch_facts().module
    if lay is None:
        return torch._empty_affine_quantized(*(shape or ((),)), scale=s, zero_point=zp, dtype=dtype)  # sizes one by one: see _arrays.empty
    if lay.axis is None:
        raise ValueError(f"group_size: torch quantized tensors have no per-group form; pass dtype='{qdt.short_name}' for plain integers")
    assert sets is not None
    scales, zps = _groups.as_arrays(sets, fdt, lay, _arrays.TORCH)
    return torch._empty_per_channel_affine_quantized(shape, scales=scales.double(), zero_points=zps, axis=lay.axis, dtype=dtype)


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
    backend = (Context._default or Context.get())._backend if ctx is None else resolve_context(ctx)  # a default context is never closed
    src = _arrays.read(x, "x", quantized=False)
    _, kind, src_ptr, fdt, shape, numel = src
    if axis is None and group_size is None:
        lay = None
        if scale is None or zero_point is None:
            scale, zero_point = _computed(backend, src, resolve(dtype, "dtype", quantized=True), scale, zero_point, symmetric)
        qdt, mode, s, zp = per_tensor_args(dtype, round_mode, scale, zero_point, fdt)
        op = reduce_op_value(reduce)
    else:
        qdt = resolve(dtype, "dtype", quantized=True)
        mode = round_mode_value(round_mode)
        op = reduce_op_value(reduce)
        lay = _groups.layout(shape, axis, group_size)
        assert lay is not None  # axis or group_size was given
        sets = _sets(backend, src, qdt, scale, zero_point, symmetric, lay)
    if out is None:
        if op == 1:
            raise ValueError("out: reduce='add' needs the array to add into")
        dst_array, dst_ptr = _arrays.empty(kind, shape, fdt)
    else:
        dst_array, dst_ptr = _arrays.write(out, src, fdt, numel, in_place=True)
    if lay is None:
        execute = backend.execute_held if numel <= HELD_MAX else backend.execute
        status = execute(backend.handle, pack_per_tensor(FAKE_QUANTIZE, fdt._value_, qdt._value_, mode, op, 0, src_ptr, dst_ptr, numel, s,
                                                         zp if zp < _2_63 else zp - _2_64, 0 if seed is None and mode == 0 else check_seed(seed, mode)))
        if status:
            backend.fail(status)
    elif numel:
        backend.run_sets(FAKE_QUANTIZE, fdt, qdt, src_ptr, dst_ptr, numel, mode, op, check_seed(seed, mode), sets)
    else:
        _groups.check_values(sets, fdt, qdt)
    return dst_array


# What _source finds: the quantized buffer, its type, parameters, logical shape, axis and group size.
_Source = tuple[Buffer, DataType, Any, Any, tuple[int, ...], Any, Any]


def _source(q: Any, qdtype: Any, scale: Any, zero_point: Any, shape: Any, axis: Any, group_size: Any) -> _Source:
    """The quantized buffer, its type, parameters, logical shape and grouping,
    from a Quantized, a torch quantized tensor or a raw integer array."""
    if isinstance(q, Quantized):
        if scale is not None or zero_point is not None or qdtype is not None or shape is not None or axis is not None or group_size is not None:
            raise ValueError("q: a Quantized carries its own dtype, shape, scale, zero_point and grouping; do not restate them")
        qdt = q.dtype
        if type(qdt) is not DataType or qdt._value_ < 16:
            qdt = resolve(qdt, "q.dtype", quantized=True)
        logical = q.shape
        buf = _arrays.read(q.data, "q.data", quantized=True)
        if buf[3] is not qdt or buf[4] != logical or type(logical) is not tuple:  # else data of qdt values in the shape, a valid one
            logical = check_shape(logical, "q.shape")
            numel = math.prod(logical)
            if buf[3] is not qdt or buf[5] != numel:  # else the storage of numel qdt values, which check_data also passes
                _arrays.check_data(buf, qdt, numel, "q.data")
                array, kind, ptr, _, shape, _ = buf
                buf = array, kind, ptr, qdt, shape, numel
        return buf, qdt, q.scale, q.zero_point, logical, q.axis, q.group_size
    if (type(q) is _arrays._torch_tensor or _arrays.kind_of(q, "q") == _arrays.TORCH) and q.is_quantized:
        if scale is not None or zero_point is not None or axis is not None or group_size is not None:
            raise ValueError("q: a torch quantized tensor carries its parameters; do not restate them")
        buf = _arrays.read(q, "q", quantized=True)
        scheme = q.qscheme()
        facts = _arrays.torch_facts()
        if scheme in facts.per_tensor_schemes:
            return buf, buf[3], q.q_scale(), q.q_zero_point(), buf[4], None, None  # a Python float and int
        if scheme in facts.per_channel_schemes:
            return buf, buf[3], q.q_per_channel_scales(), q.q_per_channel_zero_points(), buf[4], q.q_per_channel_axis(), None
        raise NotImplementedError(f"q: quantization scheme {scheme} is not supported (its zero points are floats)")
    buf = _arrays.read(q, "q", quantized=True)
    array, kind, ptr, buf_dt, buf_shape, buf_numel = buf
    qdt = buf_dt if qdtype is None else resolve(qdtype, "qdtype", quantized=True)
    if shape is not None:
        shape = check_shape(shape)
    if qdt._bits < 8:  # type: ignore[attr-defined]  # qdt.is_packed, without a property's frame
        if buf_dt is not DataType.UINT8:
            raise TypeError(f"q: packed {qdt.short_name} data must be a uint8 array, got {array.dtype}")
        numel = 8 // qdt.bit_size * buf_numel if shape is None else math.prod(shape)
        if qdt.nbytes(numel) != buf_numel:
            raise ValueError(f"shape: {numel} {qdt.short_name} elements need {qdt.nbytes(numel)} bytes, q has {buf_numel}")
        logical = (numel,) if shape is None else shape
    else:
        if qdt is not buf_dt:
            raise TypeError(f"qdtype: {qdt.short_name} does not match q's dtype {array.dtype}")
        logical = buf_shape if shape is None else shape
        if shape is not None and math.prod(logical) != buf_numel:
            raise ValueError(f"shape: {logical} has {math.prod(logical)} elements, q has {buf_numel}")
    if zero_point is None and qdt.is_float8:
        zero_point = 0 if axis is None and group_size is None else np.zeros(np.shape(scale), np.int64)
    if scale is None or zero_point is None:
        raise ValueError("scale, zero_point: required to dequantize a plain integer array")
    if qdt._bits < 8:  # type: ignore[attr-defined]  # packed: the buffer holds bytes; the call counts values
        buf = array, kind, ptr, qdt, buf_shape, math.prod(logical)
    return buf, qdt, scale, zero_point, logical, axis, group_size


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
    backend = (Context._default or Context.get())._backend if ctx is None else resolve_context(ctx)  # a default context is never closed
    src, qdt, scale, zero_point, logical, axis, group_size = _source(q, qdtype, scale, zero_point, shape, axis, group_size)
    return dequantize_buffer(backend, src, qdt, scale, zero_point, logical, axis, group_size, dtype, reduce, out)


def dequantize_buffer(backend: Any, src: Buffer, qdt: DataType, scale: Any, zero_point: Any, logical: tuple[int, ...], axis: Any,
                      group_size: Any, dtype: Any, reduce: Any, out: Any) -> Any:
    """dequantize from the buffer of the stored values (``numel`` of
    them, of type ``qdt``) once its source is known: the core that
    piquant.torch shares."""
    _, kind, src_ptr, _, _, numel = src
    lay = None if axis is None and group_size is None else _groups.layout(logical, axis, group_size)
    op = _REDUCE_NAMES.get(reduce) if type(reduce) is str else None
    if op is None:
        op = reduce_op_value(reduce)
    fdt = None if dtype is None else resolve(dtype, "dtype", quantized=False)
    if out is None:
        if op == 1:
            raise ValueError("out: reduce='add' needs the array to add into")
        dst_dt = fdt or _F32
        dst_array, dst_ptr = _arrays.empty(kind, logical, dst_dt, numel=numel)
    else:
        out_dt = _arrays.float_type_of(out, "out")
        if fdt is not None and fdt is not out_dt:
            raise ValueError(f"dtype: {fdt.short_name} does not match out's dtype {out.dtype}")
        dst_dt = out_dt
        dst_array, dst_ptr = _arrays.write(out, src, out_dt, numel)
    if lay is not None:
        sets = _groups.checked(scale, zero_point, dst_dt, qdt, lay)
        if numel:
            backend.run_sets(DEQUANTIZE, dst_dt, qdt, src_ptr, dst_ptr, numel, 0, op, 0, sets)
        else:
            _groups.check_values(sets, dst_dt, qdt)
        return dst_array
    _, _, s, zp = per_tensor_args(qdt, "nearest", scale, zero_point, dst_dt)  # the checks of scale and zero_point, a combination seen before looked up
    execute = backend.execute_held if numel <= HELD_MAX else backend.execute
    status = execute(backend.handle, pack_per_tensor(DEQUANTIZE, dst_dt._value_, qdt._value_, 0, op, 0, src_ptr, dst_ptr, numel, s,
                                                     zp if zp < _2_63 else zp - _2_64, 0))
    if status:
        backend.fail(status)
    return dst_array
