"""pi-quant's torch API (``piquant.torch``), same signatures, checked arguments.

Unlike pi-quant, a quantized torch tensor returned here carries the real
scale and zero point, so torch's own ``.dequantize()`` agrees with ours, and
bad arguments raise instead of aborting. Beyond pi-quant's types, every
piquant type is accepted (e.g. torch.int8, torch.qint32, torch.float16).
"""

from __future__ import annotations

import torch

from . import _arrays
from ._api import compute_params, dequantize_buffer
from ._api import dequantize as _dequantize
from ._api import quantize as _quantize
from ._context import Context, resolve_context
from ._dtypes import DataType, resolve


def torch_to_piquant_dtype(dtype: torch.dtype) -> DataType:
    return resolve(dtype, "dtype")


def piquant_to_torch_dtype(dtype: DataType) -> torch.dtype:
    return _arrays.torch_storage(resolve(dtype, "dtype"))


def _torch_dtype(dtype: torch.dtype, *, quantized: bool) -> DataType:
    try:  # a torch dtype accepted before: one dict lookup instead of isinstance and resolve (~1k instructions a call)
        dt = _ACCEPTED[quantized].get(dtype)
    except TypeError:  # unhashable: refused below
        dt = None
    if dt is None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype: expected a torch dtype, got {dtype!r}")
        dt = _ACCEPTED[quantized][dtype] = resolve(dtype, "dtype", quantized=quantized)
    return dt


# The torch dtypes _torch_dtype has accepted, for quantized (True) and float (False) types.
_ACCEPTED: dict[bool, dict[torch.dtype, DataType]] = {False: {}, True: {}}


def compute_quant_params(tensor: torch.Tensor, *, dtype: torch.dtype, ctx: Context | None = None) -> tuple[float, int]:
    return tuple(compute_params(tensor, _torch_dtype(dtype, quantized=True), ctx=ctx))


def quantize(
    tensor: torch.Tensor,
    *,
    scale: float,
    zero_point: int,
    dtype: torch.dtype,
    round_mode: str = "nearest",
    seed: int | None = None,
    ctx: Context | None = None,
) -> torch.Tensor:
    """A plain integer tensor for integer dtypes (packed uint8 bytes for
    2/4-bit types), a torch quantized tensor for quint8, qint8, qint32,
    quint4x2 and quint2x4."""
    _torch_dtype(dtype, quantized=True)
    q = _quantize(tensor, dtype, scale=scale, zero_point=zero_point, round_mode=round_mode, seed=seed, ctx=ctx)
    return q.data


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
    fdt = _torch_dtype(dtype, quantized=False)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor: expected a torch tensor, got {type(tensor).__name__}")
    if tensor.is_quantized:
        # pi-quant reads the stored integers (packed types: their bytes) with
        # the parameters given, from the tensor's own memory.
        src = _arrays.read(tensor, "tensor", quantized=True)
        _, _, _, qdt, shape, _ = src
        if out is None and reduce_op == "add":
            out = torch.zeros(shape, dtype=_arrays.torch_storage(fdt))
        return dequantize_buffer(resolve_context(ctx), src, qdt, scale, zero_point, shape, None, None, fdt, reduce_op, out)
    qdt = resolve(tensor.dtype, "tensor", quantized=True)
    if out is None and reduce_op == "add":
        out = torch.zeros(tensor.shape, dtype=_arrays.torch_storage(fdt))
    return _dequantize(tensor, fdt, scale=scale, zero_point=zero_point, qdtype=qdt, reduce=reduce_op, out=out, ctx=ctx)
