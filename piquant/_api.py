"""quantize, dequantize and compute_params for numpy arrays and torch tensors."""

from __future__ import annotations

import ctypes
import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple


from . import _arrays
from ._context import Context, reduce_op_value, resolve_context, round_mode_value
from ._dtypes import DataType, resolve, torch_dtype_map


class QuantParams(NamedTuple):
    """Per-tensor quantization parameters: ``q = round(x / scale) + zero_point``."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class Quantized:
    """A quantized array with what is needed to read it back.

    ``data`` is a numpy array or torch tensor of the storage type: uint8/int8
    with the logical ``shape`` for 8-bit types; a flat uint8 array of packed
    bytes for 4-bit types (element 2i in the low nibble of byte i).
    """

    data: Any
    dtype: DataType
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def params(self) -> QuantParams:
        return QuantParams(self.scale, self.zero_point)

    def dequantize(self, dtype: Any = None, *, out: Any = None, reduce: str = "set", ctx: Context | None = None) -> Any:
        return dequantize(self, dtype, out=out, reduce=reduce, ctx=ctx)


def _scale(scale: Any) -> float:
    """``scale`` rounded to float32, checked."""
    if type(scale) is not float and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)):
        raise TypeError(f"scale: expected a real number, got {type(scale).__name__}")
    s = ctypes.c_float(scale).value  # overflow gives inf
    if not (s > 0 and math.isfinite(s) and math.isfinite(ctypes.c_float(1 / s).value)):
        raise ValueError(f"scale: expected a finite number > 0 whose float32 reciprocal is finite, got {scale!r}")
    return float(s)


def _zero_point(zero_point: Any, qdt: DataType) -> int:
    if type(zero_point) is not int and (isinstance(zero_point, bool) or not isinstance(zero_point, numbers.Integral)):
        raise TypeError(f"zero_point: expected an integer, got {type(zero_point).__name__}")
    zp = int(zero_point)
    if not qdt.qmin <= zp <= qdt.qmax:
        raise ValueError(f"zero_point: expected an integer in [{qdt.qmin}, {qdt.qmax}] for {qdt.short_name}, got {zp}")
    return zp


def compute_params(x: Any, dtype: Any = "uint8", *, symmetric: bool = False, ctx: Context | None = None) -> QuantParams:
    """scale and zero_point for quantizing ``x`` to ``dtype``, as
    torch.ao.quantization.MinMaxObserver computes them (affine by default,
    ``symmetric=True`` for the symmetric scheme). NaN is ignored; an infinite
    value raises ValueError."""
    backend = resolve_context(ctx)
    src = _arrays.read(x, "x", quantized=False)
    qdt = resolve(dtype, "dtype", quantized=True)
    scale, zp = backend.compute_params(src.ptr, src.dtype, src.numel, qdt, bool(symmetric))
    return QuantParams(scale, zp)


def quantize(
    x: Any,
    dtype: Any = "uint8",
    *,
    scale: float | None = None,
    zero_point: int | None = None,
    symmetric: bool = False,
    round_mode: Any = "nearest",
    out: Any = None,
    ctx: Context | None = None,
) -> Quantized:
    """Quantize a float32/bfloat16 array (numpy or torch) to ``dtype``.

    ``q = clamp(round_half_even(x * (1/scale)) + zero_point, qmin, qmax)``;
    NaN becomes zero_point, ±inf the ends of the range. Without ``scale`` and
    ``zero_point`` both are computed with :func:`compute_params`. ``out``, if
    given, must be a contiguous, writable array of the storage dtype and size
    (for 4-bit types: ceil(n/2) uint8 bytes). Returns a :class:`Quantized`.
    """
    backend = resolve_context(ctx)
    src = _arrays.read(x, "x", quantized=False)
    qdt = resolve(dtype, "dtype", quantized=True)
    mode = round_mode_value(round_mode)
    if scale is None and zero_point is None:
        scale, zero_point = backend.compute_params(src.ptr, src.dtype, src.numel, qdt, bool(symmetric))
    elif scale is None or zero_point is None:
        raise ValueError("scale, zero_point: give both, or neither to compute them from x")
    s = _scale(scale)
    zp = _zero_point(zero_point, qdt)
    if out is None:
        dst = _arrays.empty(src.kind, src.shape, qdt)
    else:
        dst = _arrays.write(out, src.kind, qdt, src.shape, src.numel)
        _arrays.check_no_overlap(src, dst)
    backend.quantize(src.ptr, src.dtype, dst.ptr, qdt, src.numel, s, zp, mode)
    return Quantized(dst.array, qdt, tuple(src.shape), s, zp)


def _source(q: Any, qdtype: Any, scale: Any, zero_point: Any, shape: Any) -> tuple[_arrays.Buffer, DataType, float, int, tuple[int, ...]]:
    """The quantized buffer, its type, parameters and logical shape, from a
    Quantized, a torch quantized tensor or a raw integer array."""
    if isinstance(q, Quantized):
        if scale is not None or zero_point is not None or qdtype is not None or shape is not None:
            raise ValueError("q: a Quantized carries its own dtype, shape, scale and zero_point; do not restate them")
        buf = _arrays.read(q.data, "q.data", quantized=True)
        want = q.dtype.nbytes(q.numel) if q.dtype.is_packed else q.numel
        if buf.numel != want:
            raise ValueError(f"q: its data has {buf.numel} elements, {q.numel} {q.dtype.short_name} values need {want}")
        return buf._replace(dtype=q.dtype, numel=q.numel), q.dtype, q.scale, q.zero_point, q.shape
    if _arrays.kind_of(q, "q") == _arrays.TORCH and q.is_quantized:
        import torch

        if q.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise NotImplementedError(f"q: quantization scheme {q.qscheme()} is not supported yet")
        if scale is not None or zero_point is not None:
            raise ValueError("q: a torch quantized tensor carries its scale and zero_point; do not restate them")
        qdt = torch_dtype_map().get(q.dtype)
        if qdt is None:
            raise TypeError(f"q: unsupported quantized dtype {q.dtype}")
        q = q.contiguous()
        buf = _arrays.Buffer(q, _arrays.TORCH, q.data_ptr(), qdt, tuple(q.shape), q.numel())
        return buf, qdt, float(q.q_scale()), int(q.q_zero_point()), tuple(q.shape)
    buf = _arrays.read(q, "q", quantized=True)
    qdt = buf.dtype if qdtype is None else resolve(qdtype, "qdtype", quantized=True)
    if qdt.is_packed:
        if buf.dtype is not DataType.UINT8:
            raise TypeError(f"q: packed {qdt.short_name} data must be a uint8 array, got {buf.array.dtype}")
        numel = 2 * buf.numel if shape is None else math.prod(shape)
        if qdt.nbytes(numel) != buf.numel:
            raise ValueError(f"shape: {numel} {qdt.short_name} elements need {qdt.nbytes(numel)} bytes, q has {buf.numel}")
        logical = (numel,) if shape is None else tuple(shape)
    else:
        if qdt is not buf.dtype:
            raise TypeError(f"qdtype: {qdt.short_name} does not match q's dtype {buf.array.dtype}")
        logical = buf.shape if shape is None else tuple(shape)
        if math.prod(logical) != buf.numel:
            raise ValueError(f"shape: {logical} has {math.prod(logical)} elements, q has {buf.numel}")
    if scale is None or zero_point is None:
        raise ValueError("scale, zero_point: required to dequantize a plain integer array")
    return buf._replace(dtype=qdt, numel=math.prod(logical)), qdt, scale, zero_point, logical


def dequantize(
    q: Any,
    dtype: Any = None,
    *,
    scale: float | None = None,
    zero_point: int | None = None,
    qdtype: Any = None,
    shape: tuple[int, ...] | None = None,
    reduce: Any = "set",
    out: Any = None,
    ctx: Context | None = None,
) -> Any:
    """Dequantize to a float32 (default) or bfloat16 array of the logical shape.

    ``q`` is a :class:`Quantized` (nothing to restate), a torch quantized
    tensor, or a plain uint8/int8 array with ``scale`` and ``zero_point``
    (and ``qdtype="uint4"/"int4"`` plus ``shape`` for packed data).
    ``x = float32(q - zero_point) * scale``; ``reduce="add"`` adds into ``out``
    instead of overwriting it (``out`` is then required).
    """
    backend = resolve_context(ctx)
    src, qdt, scale, zero_point, logical = _source(q, qdtype, scale, zero_point, shape)
    s = _scale(scale)
    zp = _zero_point(zero_point, qdt)
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
    backend.dequantize(src.ptr, qdt, dst.ptr, dst.dtype, src.numel, s, zp, op)
    return dst.array
