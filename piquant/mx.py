"""OCP microscaling formats (MXFP8, MXFP6, MXFP4, MXINT8) and NVFP4, in
torchao's layouts (docs/semantics.md, *MX block formats and NVFP4*).

The native kernels (zig/formats/mx.zig) run them when the library is
loaded, piquant_reference's numpy code otherwise (the context's backend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _arrays
from ._backend import MX_FORMATS, SCALE_MODES, mx_data_bytes
from ._checks import check_seed
from ._context import Context, resolve_context, round_mode_value
from ._dtypes import DataType, resolve

FORMATS = MX_FORMATS
_BYTE = DataType.UINT8  # an enum member read once (a class attribute lookup costs 0.1 µs)
_FP8 = {"mxfp8_e4m3": "float8_e4m3fn", "mxfp8_e5m2": "float8_e5m2"}


@dataclass(frozen=True)
class MXArray:
    """Blocks of ``block_size`` elements along the last axis, each with a
    scale. ``data``: float8 codes (torch float8 tensor / ml_dtypes array)
    for MXFP8, one FP6 code per byte (uint8) for MXFP6, two FP4 codes per
    byte (uint8, first element in the low nibble) for MXFP4/NVFP4, int8 for
    MXINT8. ``scales``: shape ``shape[:-1] + (shape[-1] // block_size,)``,
    E8M0 (torch.float8_e8m0fnu / uint8), NVFP4's E4M3 (float8_e4m3fn).
    ``per_tensor_scale``: NVFP4's optional float32 scale."""

    data: Any
    scales: Any
    fmt: str
    shape: tuple[int, ...]
    block_size: int
    per_tensor_scale: float | None = None

    def dequantize(self, dtype: Any = None, *, out: Any = None, ctx: Context | None = None) -> Any:
        return dequantize(self, dtype, out=out, ctx=ctx)


def _check_format(fmt: Any, block_size: Any, scale_mode: Any) -> int:
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {FORMATS}, got {fmt!r}")
    if fmt == "nvfp4" and block_size is None:
        block_size = 16
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected a positive integer, got {block_size!r}")
    if fmt == "nvfp4" and block_size != 16:
        raise ValueError(f"block_size: NVFP4 blocks are 16 elements, got {block_size}")
    if fmt in ("mxfp4", "nvfp4") and block_size % 2:
        raise ValueError(f"block_size: FP4 codes are packed two per byte; expected an even block size, got {block_size}")
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"scale_mode: expected one of {SCALE_MODES}, got {scale_mode!r}")
    return block_size


def _layout(fmt: str, kind: str, shape: tuple[int, ...], block_size: int) -> tuple[tuple[tuple[int, ...], Any], tuple[tuple[int, ...], Any]]:
    """(shape, dtype) of the data and of the scales of x of `shape`."""
    n = shape[-1]
    sshape = (*shape[:-1], n // block_size)
    dshape = (*shape[:-1], mx_data_bytes(fmt, n))
    if kind == _arrays.NUMPY:
        from piquant_reference import float8

        ddt = float8.FORMATS[_FP8[fmt]].storage if fmt in _FP8 else np.dtype(np.int8 if fmt == "mxint8" else np.uint8)
        sdt = float8.FORMATS["float8_e4m3fn"].storage if fmt == "nvfp4" else np.dtype(np.uint8)
        return (dshape, ddt), (sshape, sdt)
    import torch

    ddt = getattr(torch, _FP8[fmt]) if fmt in _FP8 else torch.int8 if fmt == "mxint8" else torch.uint8
    return (dshape, ddt), (sshape, torch.float8_e4m3fn if fmt == "nvfp4" else torch.float8_e8m0fnu)


def _empty(kind: str, shape: tuple[int, ...], dtype: Any, arg: str) -> tuple[Any, int]:
    """A new array and its address (a new tensor's storage is whole: not checked)."""
    if kind == _arrays.NUMPY:
        a = np.empty(shape, dtype)
        return a, _arrays.address(a, arg)
    import torch

    t = torch.empty(shape, dtype=dtype)
    return t, t.data_ptr()


def _destination(arr: Any, src: _arrays.Buffer, shape: tuple[int, ...], dtype: Any, arg: str) -> int:
    """The address of one array of ``out``: an `_arrays.write` destination
    of one-byte elements (FP4 codes by pairs) apart from x, of the layout's
    shape."""
    _, ptr = _arrays.write(arr, src, _BYTE, math.prod(shape), arg, storage=dtype, src_arg="x")
    if tuple(arr.shape) != shape:
        raise ValueError(f"{arg}: expected shape {shape}, got {tuple(arr.shape)}")
    return ptr


def quantize(
    x: Any,
    fmt: str,
    *,
    block_size: int | None = None,
    scale_mode: str = "floor",
    round_mode: str = "nearest",
    seed: int | None = None,
    per_tensor_scale: float | None = None,
    out: Any = None,
    ctx: Context | None = None,
) -> MXArray:
    """Quantize ``x`` (numpy or torch; float32, bfloat16, float16 or float64)
    in blocks of ``block_size`` (32; NVFP4: 16) along its last axis, which
    must be a multiple of it. ``scale_mode``: ``"floor"`` (OCP MX v1.0) or
    ``"rceil"`` (NVIDIA, torchao's RCEIL); NVFP4's block scales are E4M3
    (``per_tensor_scale``: an optional float32 second level).
    ``round_mode="stochastic"`` rounds elements stochastically, keyed by
    (seed, flat index). ``out``: a pair (data, scales) of arrays of the
    layout to write into. ``ctx``: the context whose threads and ISA variant
    run it (the default one if None)."""
    bs = _check_format(fmt, 32 if block_size is None and fmt != "nvfp4" else block_size, scale_mode)
    if per_tensor_scale is not None and fmt != "nvfp4":
        raise ValueError("per_tensor_scale: only NVFP4 has a per-tensor scale")
    mode = round_mode_value(round_mode)
    src = _arrays.read(x, "x", quantized=False)
    _, kind, src_ptr, fdt, shape, numel = src
    if not shape or shape[-1] % bs:
        last = shape[-1] if shape else "a 0-d array's"
        raise ValueError(f"x: the last axis ({last}) is not a multiple of the block size {bs}")
    pts = None
    if per_tensor_scale is not None:
        pts = float(np.float32(per_tensor_scale))
        if not (math.isfinite(pts) and pts > 0):
            raise ValueError(f"per_tensor_scale: expected a finite float32 > 0, got {per_tensor_scale!r}")
    s = check_seed(seed, mode)
    backend = resolve_context(ctx)
    (dshape, ddt), (sshape, sdt) = _layout(fmt, kind, shape, bs)
    if out is None:
        (data, dp), (scales, sp) = _empty(kind, dshape, ddt, "out[0]"), _empty(kind, sshape, sdt, "out[1]")
    else:
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError("out: expected a pair (data, scales) of arrays")
        data, scales = out
        dp = _destination(data, src, dshape, ddt, "out[0]")
        sp = _destination(scales, src, sshape, sdt, "out[1]")
        _arrays.check_apart("out[1]", sp, int(scales.nbytes), "out[0]", dp, int(data.nbytes))
    if numel:
        backend.mx_quantize(src_ptr, fdt, dp, sp, numel, shape[-1], fmt, bs, scale_mode, mode, s if mode == 1 else 0, pts)
    return MXArray(data, scales, fmt, shape, bs, pts)


def dequantize(mx: MXArray, dtype: Any = None, *, out: Any = None, ctx: Context | None = None) -> Any:
    """The float values of an :class:`MXArray` (element · block scale in
    float32, then rounded to ``dtype``: float32 by default, bfloat16,
    float16 or float64, or ``out``'s type), of its logical shape."""
    if not isinstance(mx, MXArray):
        raise TypeError(f"mx: expected an MXArray, got {type(mx).__name__}")
    _check_format(mx.fmt, mx.block_size, "floor")
    backend = resolve_context(ctx)
    kind = _arrays.kind_of(mx.data, "mx.data")
    if kind == _arrays.TORCH:
        import torch

        data = mx.data.contiguous().view(-1).view(torch.uint8).numpy()
        scales = mx.scales.contiguous().view(-1).view(torch.uint8).numpy()
    else:
        data = np.ascontiguousarray(mx.data).reshape(-1).view(np.uint8)
        scales = np.ascontiguousarray(mx.scales).reshape(-1).view(np.uint8)
    n = math.prod(mx.shape)
    if data.size != mx_data_bytes(mx.fmt, n) or scales.size * mx.block_size != n:
        raise ValueError(f"mx: data of {data.size} bytes and {scales.size} scales do not hold shape {mx.shape} in blocks of {mx.block_size}")
    fdt = resolve(dtype if dtype is not None else (out.dtype if out is not None else "float32"), "dtype", quantized=False)
    data_ptr = _arrays.address(data, "mx.data")
    data_buf = mx.data, kind, data_ptr, _BYTE, (data.size,), data.size
    dst, dst_ptr = _arrays.empty(kind, mx.shape, fdt) if out is None else _arrays.write(out, data_buf, fdt, n)
    if n:
        sp = _arrays.address(scales, "mx.scales")
        _arrays.check_apart("out", dst_ptr, fdt.nbytes(n), "mx.scales", sp, scales.size)
        backend.mx_dequantize(data_ptr, sp, dst_ptr, fdt, n, mx.shape[-1], mx.fmt, mx.block_size, mx.per_tensor_scale)
    return dst
