"""Adapts numpy arrays and torch tensors to flat buffers the kernels use, so
that the operations in _api.py are written once for both."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ._dtypes import DataType, has_numpy_bfloat16, numpy_storage, torch_dtype_map

NUMPY = "numpy"
TORCH = "torch"


class Buffer(NamedTuple):
    array: Any  # the contiguous numpy array / torch tensor whose memory is used
    kind: str
    ptr: int
    dtype: DataType
    shape: tuple[int, ...]
    numel: int


def kind_of(x: Any, arg: str) -> str:
    if isinstance(x, np.ndarray):
        return NUMPY
    if type(x).__module__.startswith("torch") and type(x).__name__ in ("Tensor", "Parameter"):
        return TORCH
    raise TypeError(f"{arg}: expected a numpy array or a torch tensor, got {type(x).__name__}")


def dtype_of(x: Any, kind: str, arg: str, *, quantized: bool) -> DataType:
    """The DataType of an array's elements, checked against the side wanted."""
    if kind == TORCH and x.device.type != "cpu":
        raise ValueError(f"{arg}: expected a CPU tensor, got one on {x.device}")
    dt = (_NUMPY_TYPES if kind == NUMPY else torch_dtype_map()).get(x.dtype)
    if dt is None:
        raise TypeError(f"{arg}: unsupported dtype {x.dtype}")
    if dt.is_quantized != quantized:
        side = "an integer type (uint8, int8, … int64)" if quantized else "float32, bfloat16, float16 or float64"
        raise TypeError(f"{arg}: expected {side}, got dtype {x.dtype}")
    return dt


def read(x: Any, arg: str, *, quantized: bool) -> Buffer:
    """A read-only buffer of ``x``; a non-contiguous input is copied."""
    kind = kind_of(x, arg)
    dt = dtype_of(x, kind, arg, quantized=quantized)
    if kind == NUMPY:
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return Buffer(x, kind, x.ctypes.data, dt, x.shape, x.size)
    if x.requires_grad:
        x = x.detach()
    if not x.is_contiguous():
        x = x.contiguous()
    return Buffer(x, kind, x.data_ptr(), dt, tuple(x.shape), x.numel())


_NUMPY_TYPES = {numpy_storage(dt): dt for dt in DataType if not dt.is_packed and (dt is not DataType.BF16 or has_numpy_bfloat16())}


def empty(kind: str, shape: tuple[int, ...], dt: DataType, *, zeros: bool = False) -> Buffer:
    """A new array for ``shape`` elements of ``dt`` (packed types: flat bytes)."""
    numel = math.prod(shape)
    storage_shape = (dt.nbytes(numel),) if dt.is_packed else shape
    if kind == NUMPY:
        a = (np.zeros if zeros else np.empty)(storage_shape, dtype=numpy_storage(dt))
        return Buffer(a, kind, a.ctypes.data, dt, shape, numel)
    import torch

    tdt = torch_storage(dt)
    t = (torch.zeros if zeros else torch.empty)(storage_shape, dtype=tdt)
    return Buffer(t, kind, t.data_ptr(), dt, shape, numel)


def torch_storage(dt: DataType) -> Any:
    """The torch dtype a type's data is stored as (packed types: uint8)."""
    import torch

    return getattr(torch, "uint8" if dt.is_packed else dt.short_name)


def write(out: Any, kind: str, dt: DataType, shape: tuple[int, ...], numel: int, arg: str = "out") -> Buffer:
    """``out`` as a destination: it must be the same kind of array as the
    input, contiguous, writable, of the exact storage dtype and size. It is
    never copied, so results land in the caller's memory or an error is raised."""
    got = kind_of(out, arg)
    if got != kind:
        raise TypeError(f"{arg}: expected a {kind} array like the input, got a {got} one")
    nbytes = dt.nbytes(numel)
    want_size = nbytes if dt.is_packed else numel
    if kind == NUMPY:
        want = numpy_storage(dt)
        if out.dtype != want:
            raise ValueError(f"{arg}: expected dtype {want}, got {out.dtype}")
        if not out.flags.c_contiguous:
            raise ValueError(f"{arg}: expected a C-contiguous array")
        if not out.flags.writeable:
            raise ValueError(f"{arg}: the array is read-only")
        size, ptr = out.size, out.ctypes.data
    else:
        want = torch_storage(dt)
        if out.dtype != want:
            raise ValueError(f"{arg}: expected dtype {want}, got {out.dtype}")
        if out.device.type != "cpu":
            raise ValueError(f"{arg}: expected a CPU tensor, got one on {out.device}")
        if not out.is_contiguous():
            raise ValueError(f"{arg}: expected a contiguous tensor")
        if out.requires_grad:
            raise ValueError(f"{arg}: a tensor that requires grad cannot be written in place")
        size, ptr = out.numel(), out.data_ptr()
    if size != want_size:
        raise ValueError(f"{arg}: expected {want_size} elements, got {size}")
    return Buffer(out, kind, ptr, dt, shape, numel)


def check_no_overlap(a: Buffer, b: Buffer, arg: str = "out") -> None:
    """Kernels read and write in parallel blocks: a destination that shares
    memory with its source would be read after it was overwritten."""
    a_end = a.ptr + a.dtype.nbytes(a.numel)
    b_end = b.ptr + b.dtype.nbytes(b.numel)
    if a.numel and b.numel and a.ptr < b_end and b.ptr < a_end:
        raise ValueError(f"{arg}: shares memory with the input; pass a separate array")
