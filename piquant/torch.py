"""pi-quant's torch API (``piquant.torch``), same signatures, checked arguments.

Unlike pi-quant, a quantized torch tensor returned here carries the real
scale and zero point, so torch's own ``.dequantize()`` agrees with ours, and
bad arguments raise instead of aborting.
"""

from __future__ import annotations

import torch

from . import _arrays
from ._api import _scale, _zero_point
from ._api import quantize as _quantize
from ._context import Context, reduce_op_value, resolve_context, round_mode_value
from ._dtypes import DataType, resolve

_QUANT_TYPES = {torch.quint8: DataType.UINT8, torch.uint8: DataType.UINT8, torch.quint4x2: DataType.UINT4}
_DEQUANT_TYPES = {torch.float32: DataType.F32, torch.bfloat16: DataType.BF16}


def torch_to_piquant_dtype(dtype: torch.dtype) -> DataType:
    return resolve(dtype, "dtype")


def piquant_to_torch_dtype(dtype: DataType) -> torch.dtype:
    return _arrays.torch_storage(resolve(dtype, "dtype"))


def _quant_dtype(dtype: torch.dtype) -> DataType:
    if dtype not in _QUANT_TYPES:
        raise TypeError(f"dtype: expected one of {list(_QUANT_TYPES)}, got {dtype}")
    return _QUANT_TYPES[dtype]


def compute_quant_params(tensor: torch.Tensor, *, dtype: torch.dtype, ctx: Context | None = None) -> tuple[float, int]:
    from ._api import compute_params

    return tuple(compute_params(tensor, _quant_dtype(dtype), ctx=ctx))  # type: ignore[return-value]


def quantize(
    tensor: torch.Tensor,
    *,
    scale: float,
    zero_point: int,
    dtype: torch.dtype,
    round_mode: str = "nearest",
    ctx: Context | None = None,
) -> torch.Tensor:
    qdt = _quant_dtype(dtype)
    if dtype == torch.uint8:
        q = _quantize(tensor, qdt, scale=scale, zero_point=zero_point, round_mode=round_mode, ctx=ctx)
        return q.data
    backend = resolve_context(ctx)
    src = _arrays.read(tensor, "tensor", quantized=False)
    s, zp, mode = _scale(scale), _zero_point(zero_point, qdt), round_mode_value(round_mode)
    # A real torch quantized tensor, written in place by the kernel.
    out = torch._empty_affine_quantized(src.shape, scale=s, zero_point=zp, dtype=dtype)
    backend.quantize(src.ptr, src.dtype, out.data_ptr(), qdt, src.numel, s, zp, mode)
    return out


def dequantize(
    tensor: torch.Tensor,
    *,
    scale: float,
    zero_point: int,
    dtype: torch.dtype,
    reduce_op: str = "set",
    ctx: Context | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """pi-quant's dequantize: ``scale`` and ``zero_point`` as given are used,
    whatever a quantized input carries. ``out`` (ours) is the tensor to write
    or, with ``reduce_op='add'``, to add into (default: a new zero tensor)."""
    if dtype not in _DEQUANT_TYPES:
        raise TypeError(f"dtype: expected one of {list(_DEQUANT_TYPES)}, got {dtype}")
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor: expected a torch tensor, got {type(tensor).__name__}")
    backend = resolve_context(ctx)
    qdt = _quant_dtype(tensor.dtype)
    s, zp, op = _scale(scale), _zero_point(zero_point, qdt), reduce_op_value(reduce_op)
    if tensor.device.type != "cpu":
        raise ValueError(f"tensor: expected a CPU tensor, got one on {tensor.device}")
    tensor = tensor.contiguous()
    shape, numel = tuple(tensor.shape), tensor.numel()
    fdt = _DEQUANT_TYPES[dtype]
    if out is None:
        dst = _arrays.empty(_arrays.TORCH, shape, fdt, zeros=op == 1)
    else:
        dst = _arrays.write(out, _arrays.TORCH, fdt, shape, numel)
    backend.dequantize(tensor.data_ptr(), qdt, dst.ptr, fdt, numel, s, zp, op)
    return dst.array
