"""OCP microscaling formats (MXFP8, MXFP6, MXFP4, MXINT8) and NVFP4, in
torchao's layouts (docs/semantics.md, *MX block formats and NVFP4*).

These run piquant_reference's numpy code for now; native kernels are to
follow (issue 17).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _arrays
from ._checks import check_seed
from ._context import round_mode_value
from ._dtypes import DataType, resolve

FORMATS = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8", "nvfp4")
_FP8 = {"mxfp8_e4m3": "float8_e4m3fn", "mxfp8_e5m2": "float8_e5m2"}
SCALE_MODES = ("floor", "rceil")


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

    def dequantize(self, dtype: Any = None, *, out: Any = None) -> Any:
        return dequantize(self, dtype, out=out)


def _ref() -> Any:
    from piquant_reference import mx

    return mx


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


def _numpy_floats(src: _arrays.Buffer) -> np.ndarray:
    a = src.array
    if src.kind == _arrays.TORCH:
        import torch

        a = a.view(torch.uint16).numpy() if src.dtype is DataType.BF16 else a.numpy()
        if src.dtype is DataType.BF16:
            import ml_dtypes

            a = a.view(ml_dtypes.bfloat16)
    return np.asarray(a)


def _storage(fmt: str, kind: str, data: np.ndarray, scales: np.ndarray, shape: tuple[int, ...], block_size: int) -> tuple[Any, Any]:
    """The reference's flat codes in the layout and array kind of the API."""
    n = shape[-1]
    sshape = (*shape[:-1], n // block_size)
    dshape = (*shape[:-1], n // 2) if fmt in ("mxfp4", "nvfp4") else shape
    data = data.reshape(dshape)
    scales = scales.reshape(sshape)
    if kind == _arrays.NUMPY:
        if fmt in _FP8:
            from piquant_reference import float8

            data = data.view(float8.FORMATS[_FP8[fmt]].storage)
        if fmt == "nvfp4":
            from piquant_reference import float8

            scales = scales.view(float8.FORMATS["float8_e4m3fn"].storage)
        return data, scales
    import torch

    td = torch.from_numpy(np.ascontiguousarray(data).view(np.int8 if fmt == "mxint8" else np.uint8))
    if fmt in _FP8:
        td = td.view(getattr(torch, _FP8[fmt]))
    ts = torch.from_numpy(np.ascontiguousarray(scales).view(np.uint8)).view(torch.float8_e4m3fn if fmt == "nvfp4" else torch.float8_e8m0fnu)
    return td, ts


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
) -> MXArray:
    """Quantize ``x`` (numpy or torch; float32, bfloat16, float16 or float64)
    in blocks of ``block_size`` (32; NVFP4: 16) along its last axis, which
    must be a multiple of it. ``scale_mode``: ``"floor"`` (OCP MX v1.0) or
    ``"rceil"`` (NVIDIA, torchao's RCEIL); NVFP4's block scales are E4M3
    (``per_tensor_scale``: an optional float32 second level).
    ``round_mode="stochastic"`` rounds elements stochastically, keyed by
    (seed, flat index). ``out``: a pair (data, scales) of arrays of the
    layout to write into."""
    bs = _check_format(fmt, 32 if block_size is None and fmt != "nvfp4" else block_size, scale_mode)
    if per_tensor_scale is not None and fmt != "nvfp4":
        raise ValueError("per_tensor_scale: only NVFP4 has a per-tensor scale")
    mode = round_mode_value(round_mode)
    src = _arrays.read(x, "x", quantized=False)
    shape = tuple(src.shape)
    if not shape or shape[-1] % bs:
        last = shape[-1] if shape else "a 0-d array's"
        raise ValueError(f"x: the last axis ({last}) is not a multiple of the block size {bs}")
    pts = None
    if per_tensor_scale is not None:
        pts = float(np.float32(per_tensor_scale))
        if not (math.isfinite(pts) and pts > 0):
            raise ValueError(f"per_tensor_scale: expected a finite float32 > 0, got {per_tensor_scale!r}")
    s = check_seed(seed, mode)
    data, scales = _ref().quantize(_numpy_floats(src), fmt, bs, scale_mode, ("nearest", "stochastic")[mode], s if mode == 1 else None, pts)
    d, sc = _storage(fmt, src.kind, data, scales, shape, bs)
    if out is not None:
        _write_pair(out, d, sc, src.kind)
        d, sc = out
    return MXArray(d, sc, fmt, shape, bs, pts)


def _write_pair(out: Any, data: Any, scales: Any, kind: str) -> None:
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError("out: expected a pair (data, scales) of arrays")
    for arr, want, arg in ((out[0], data, "out[0]"), (out[1], scales, "out[1]")):
        if _arrays.kind_of(arr, arg) != kind:
            raise TypeError(f"{arg}: expected a {kind} array like the input")
        if arr.dtype != want.dtype or tuple(arr.shape) != tuple(want.shape):
            raise ValueError(f"{arg}: expected shape {tuple(want.shape)} and dtype {want.dtype}, got {tuple(arr.shape)} and {arr.dtype}")
    for arr, want in ((out[0], data), (out[1], scales)):
        arr[...] = want


def dequantize(mx: MXArray, dtype: Any = None, *, out: Any = None) -> Any:
    """The float values of an :class:`MXArray` (element · block scale in
    float32, then rounded to ``dtype``: float32 by default, bfloat16,
    float16 or float64, or ``out``'s type), of its logical shape."""
    if not isinstance(mx, MXArray):
        raise TypeError(f"mx: expected an MXArray, got {type(mx).__name__}")
    _check_format(mx.fmt, mx.block_size, "floor")
    kind = _arrays.kind_of(mx.data, "mx.data")
    if kind == _arrays.TORCH:
        import torch

        data = mx.data.contiguous().view(-1).view(torch.uint8).numpy()
        scales = mx.scales.contiguous().view(-1).view(torch.uint8).numpy()
    else:
        data = np.ascontiguousarray(mx.data).reshape(-1).view(np.uint8)
        scales = np.ascontiguousarray(mx.scales).reshape(-1).view(np.uint8)
    n = math.prod(mx.shape)
    per = 2 if mx.fmt in ("mxfp4", "nvfp4") else 1
    if data.size * per != n or scales.size * mx.block_size != n:
        raise ValueError(f"mx: data of {data.size} bytes and {scales.size} scales do not hold shape {mx.shape} in blocks of {mx.block_size}")
    v = _ref().dequantize(data, scales, mx.fmt, mx.block_size, mx.per_tensor_scale)
    fdt = resolve(dtype if dtype is not None else (out.dtype if out is not None else "float32"), "dtype", quantized=False)
    data_buf = _arrays.Buffer(mx.data, kind, data.ctypes.data, DataType.UINT8, (data.size,), data.size)
    dst = _arrays.empty(kind, mx.shape, fdt) if out is None else _arrays.write(out, data_buf, fdt, mx.shape, n)
    import piquant_reference as ref

    # float32 products rounded to the output type (float64: widened exactly)
    res = ref.f32_to_bf16_bits(v) if fdt is DataType.BF16 else v.astype({DataType.F16: np.float16, DataType.F64: np.float64}.get(fdt, np.float32))
    if kind == _arrays.TORCH:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(res).reshape(mx.shape))
        dst.array.view(torch.uint16 if fdt is DataType.BF16 else dst.array.dtype).copy_(t)
    else:
        dst.array.reshape(-1).view(res.dtype)[...] = res.reshape(-1)
    return dst.array
