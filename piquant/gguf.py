"""llama.cpp / GGUF block formats: the exact bytes GGUF files hold, computed
by piquant's multithreaded kernels (docs/semantics.md). Q8_0, Q4_0, Q4_1,
Q5_0, Q5_1 and MXFP4 (blocks of 32) as the `gguf` package's
``gguf.quants.quantize`` produces them; the K-quants Q4_K, Q5_K and Q6_K
(super-blocks of 256) as llama.cpp's ``quantize_row_q4_K_ref`` & co. do
without an importance matrix. ``dequantize`` equals ``gguf.quants.dequantize``.

    blocks = piquant.gguf.quantize(w, "Q4_K")     # uint8, (..., n // 256 * 144)
    w2 = piquant.gguf.dequantize(blocks, "Q4_K")  # float32, (..., n)

Whole model files, as llama.cpp's quantizer does them (``FILE_TYPES``):

    piquant.gguf.quantize_file("model-f16.gguf", "model-Q4_K_M.gguf", "Q4_K_M")
"""

from __future__ import annotations

from typing import Any

from . import _arrays
from ._context import Context, resolve_context
from ._dtypes import DataType, resolve

BLOCK = 32  # elements of a block; the K-quants' super-blocks have SUPER_BLOCK
SUPER_BLOCK = 256
# GGML type number, elements and bytes per block
_TYPES = {
    "Q4_0": (2, BLOCK, 18), "Q4_1": (3, BLOCK, 20), "Q5_0": (6, BLOCK, 22), "Q5_1": (7, BLOCK, 24),
    "Q8_0": (8, BLOCK, 34), "MXFP4": (39, BLOCK, 17),
    "Q4_K": (12, SUPER_BLOCK, 144), "Q5_K": (13, SUPER_BLOCK, 176), "Q6_K": (14, SUPER_BLOCK, 210),
}  # fmt: skip
_BY_NUMBER = {number: (name, number, elements, size) for name, (number, elements, size) in _TYPES.items()}

__all__ = ["BLOCK", "FILE_TYPES", "SUPER_BLOCK", "block_bytes", "block_size", "dequantize", "quantize", "quantize_file"]


def _resolve(qtype: Any) -> tuple[str, int, int, int]:
    """(name, GGML type number, elements and bytes per block) of a name
    ("Q8_0"), a GGML type number, or a gguf.GGMLQuantizationType."""
    if isinstance(qtype, str) and qtype.upper() in _TYPES:
        return (qtype.upper(), *_TYPES[qtype.upper()])
    if not isinstance(qtype, (str, bool)) and isinstance(qtype, int) and int(qtype) in _BY_NUMBER:
        return _BY_NUMBER[int(qtype)]
    numbers = ", ".join(f"{name} = {number}" for name, (number, _, _) in _TYPES.items())
    raise ValueError(f"qtype: expected one of {', '.join(_TYPES)} (or their GGML type numbers: {numbers}), got {qtype!r}")


def block_bytes(qtype: Any) -> int:
    """Bytes of one block (of ``block_size(qtype)`` elements)."""
    return _resolve(qtype)[3]


def block_size(qtype: Any) -> int:
    """Elements of one block: 32, or 256 for the K-quants."""
    return _resolve(qtype)[2]


def quantize(x: Any, qtype: Any, *, out: Any = None, ctx: Context | None = None) -> Any:
    """Quantize a float array (numpy or torch; float32, float16, bfloat16 or
    float64, which is first rounded to float32) whose last axis (a row) is a
    multiple of the block size (32; 256 for the K-quants) into GGUF blocks: a
    uint8 array of shape (..., n // block size * bytes per block), as
    gguf.quants.quantize returns. ``out``: a contiguous uint8 array of that
    many bytes."""
    name, number, elements, size = _resolve(qtype)
    backend = resolve_context(ctx)
    src = _arrays.read(x, "x", quantized=False)
    _, kind, src_ptr, fdt, src_shape, numel = src
    if not src_shape or src_shape[-1] % elements:
        last = src_shape[-1] if src_shape else "no"
        raise ValueError(f"x: the last axis has {last} elements; {name} blocks need a multiple of {elements}")
    shape = src_shape[:-1] + (src_shape[-1] // elements * size,)
    nbytes = numel // elements * size
    if out is None:
        dst, dst_ptr = _arrays.empty(kind, shape, DataType.UINT8)
    else:
        dst, dst_ptr = _arrays.write(out, src, DataType.UINT8, nbytes)
    if numel:
        backend.gguf_quantize(src_ptr, fdt, dst_ptr, number, numel)
    return dst


def dequantize(data: Any, qtype: Any, *, dtype: Any = None, out: Any = None, ctx: Context | None = None) -> Any:
    """GGUF blocks (a uint8 array whose last axis is whole blocks) back to
    floats of shape (..., blocks · block size): float32 by default, or
    ``dtype``, or ``out``'s type (values are computed in float32, then rounded
    or widened)."""
    _, number, elements, size = _resolve(qtype)
    backend = resolve_context(ctx)
    src = _arrays.read(data, "data", quantized=True)
    array, kind, src_ptr, src_dt, src_shape, src_numel = src
    if src_dt is not DataType.UINT8:
        raise TypeError(f"data: expected uint8 bytes of GGUF blocks, got dtype {array.dtype}")
    if not src_shape or src_shape[-1] % size:
        last = src_shape[-1] if src_shape else "no"
        raise ValueError(f"data: the last axis has {last} bytes, not a whole number of {size}-byte blocks")
    shape = src_shape[:-1] + (src_shape[-1] // size * elements,)
    numel = src_numel // size * elements
    fdt = None if dtype is None else resolve(dtype, "dtype", quantized=False)
    if out is None:
        dst_dt = fdt or DataType.F32
        dst, dst_ptr = _arrays.empty(kind, shape, dst_dt)
    else:
        dst_dt = _arrays.float_type_of(out, "out")
        if fdt is not None and fdt is not dst_dt:
            raise ValueError(f"dtype: {fdt.short_name} does not match out's dtype {out.dtype}")
        dst, dst_ptr = _arrays.write(out, src, dst_dt, numel)
    if numel:
        backend.gguf_dequantize(src_ptr, number, dst_ptr, dst_dt, numel)
    return dst


from ._gguf_file import FILE_TYPES, quantize_file  # noqa: E402  (it quantizes with the functions above)
