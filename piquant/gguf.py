"""llama.cpp / GGUF block formats Q8_0, Q4_0 and Q4_1: the exact bytes GGUF
files hold, as the `gguf` package's ``gguf.quants.quantize``/``dequantize``
produce them (docs/semantics.md), computed by piquant's multithreaded kernels.

    blocks = piquant.gguf.quantize(w, "Q4_0")     # uint8, (..., n // 32 * 18)
    w2 = piquant.gguf.dequantize(blocks, "Q4_0")  # float32, (..., n)

Whole model files, as llama.cpp's quantizer does them (``FILE_TYPES``):

    piquant.gguf.quantize_file("model-f16.gguf", "model-Q4_K_M.gguf", "Q4_K_M")
"""

from __future__ import annotations

from typing import Any

from . import _arrays
from ._context import Context, resolve_context
from ._dtypes import DataType, resolve

BLOCK = 32
_TYPES = {"Q4_0": (2, 18), "Q4_1": (3, 20), "Q8_0": (8, 34)}  # GGML type number, bytes per block
_BY_NUMBER = {number: (name, size) for name, (number, size) in _TYPES.items()}

__all__ = ["BLOCK", "FILE_TYPES", "block_bytes", "dequantize", "quantize", "quantize_file"]


def _resolve(qtype: Any) -> tuple[int, int]:
    """(GGML type number, bytes per block) of a name ("Q8_0"), a GGML type
    number, or a gguf.GGMLQuantizationType."""
    if isinstance(qtype, str) and qtype.upper() in _TYPES:
        return _TYPES[qtype.upper()]
    if not isinstance(qtype, (str, bool)) and isinstance(qtype, int) and int(qtype) in _BY_NUMBER:
        return int(qtype), _BY_NUMBER[int(qtype)][1]
    raise ValueError(f"qtype: expected one of {', '.join(_TYPES)} (or their GGML type numbers 2, 3, 8), got {qtype!r}")


def block_bytes(qtype: Any) -> int:
    """Bytes of one block of 32 elements."""
    return _resolve(qtype)[1]


def quantize(x: Any, qtype: Any, *, out: Any = None, ctx: Context | None = None) -> Any:
    """Quantize a float array (numpy or torch; float32, float16, bfloat16 or
    float64, which is first rounded to float32) whose last axis is a multiple
    of 32 into GGUF blocks: a uint8 array of shape (..., n // 32 * bytes per
    block), as gguf.quants.quantize returns. ``out``: a contiguous uint8 array
    of that many bytes."""
    number, size = _resolve(qtype)
    backend = resolve_context(ctx)
    src = _arrays.read(x, "x", quantized=False)
    if not src.shape or src.shape[-1] % BLOCK:
        last = src.shape[-1] if src.shape else "no"
        raise ValueError(f"x: the last axis has {last} elements; GGUF blocks need a multiple of {BLOCK}")
    shape = src.shape[:-1] + (src.shape[-1] // BLOCK * size,)
    nbytes = src.numel // BLOCK * size
    if out is None:
        dst = _arrays.empty(src.kind, shape, DataType.UINT8)
    else:
        dst = _arrays.write(out, src.kind, DataType.UINT8, shape, nbytes)
        _arrays.check_no_overlap(src, dst)
    if src.numel:
        backend.gguf_quantize(src.ptr, src.dtype, dst.ptr, number, src.numel)
    return dst.array


def dequantize(data: Any, qtype: Any, *, dtype: Any = None, out: Any = None, ctx: Context | None = None) -> Any:
    """GGUF blocks (a uint8 array whose last axis is whole blocks) back to
    floats of shape (..., blocks · 32): float32 by default, or ``dtype``, or
    ``out``'s type (values are computed in float32, then rounded or widened)."""
    number, size = _resolve(qtype)
    backend = resolve_context(ctx)
    src = _arrays.read(data, "data", quantized=True)
    if src.dtype is not DataType.UINT8:
        raise TypeError(f"data: expected uint8 bytes of GGUF blocks, got dtype {src.array.dtype}")
    if not src.shape or src.shape[-1] % size:
        last = src.shape[-1] if src.shape else "no"
        raise ValueError(f"data: the last axis has {last} bytes, not a whole number of {size}-byte blocks")
    shape = src.shape[:-1] + (src.shape[-1] // size * BLOCK,)
    numel = src.numel // size * BLOCK
    fdt = None if dtype is None else resolve(dtype, "dtype", quantized=False)
    if out is None:
        dst = _arrays.empty(src.kind, shape, fdt or DataType.F32)
    else:
        out_dt = _arrays.dtype_of(out, _arrays.kind_of(out, "out"), "out", quantized=False)
        if fdt is not None and fdt is not out_dt:
            raise ValueError(f"dtype: {fdt.short_name} does not match out's dtype {out.dtype}")
        dst = _arrays.write(out, src.kind, out_dt, shape, numel)
        _arrays.check_no_overlap(src._replace(numel=src.numel), dst)
    if numel:
        backend.gguf_dequantize(src.ptr, number, dst.ptr, dst.dtype, numel)
    return dst.array


from ._gguf_file import FILE_TYPES, quantize_file  # noqa: E402  (it quantizes with the functions above)
