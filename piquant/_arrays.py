"""Adapts numpy arrays and torch tensors to flat buffers the kernels use, so
that the operations in _api.py are written once for both."""

from __future__ import annotations

import functools
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
    if type(x).__module__.startswith("torch") and type(x).__name__ in ("Tensor", "Parameter", "NestedTensor"):
        return TORCH
    raise TypeError(f"{arg}: expected a numpy array or a torch tensor, got {type(x).__name__}")


def check_torch(x: Any, arg: str) -> None:
    """A tensor whose elements lie in CPU memory as one strided block: not a
    sparse, mkldnn or nested tensor, nor one on another device."""
    if x.is_nested:
        raise TypeError(f"{arg}: expected a dense tensor, got a nested tensor")
    if x.layout is not torch_facts().strided:
        raise TypeError(f"{arg}: expected a dense (strided) tensor, got layout {x.layout}")
    if not x.is_cpu:
        raise ValueError(f"{arg}: expected a CPU tensor, got one on {x.device}")


def dtype_of(x: Any, kind: str, arg: str, *, quantized: bool) -> DataType:
    """The DataType of an array's elements, checked against the side wanted."""
    if kind == TORCH:
        check_torch(x, arg)
    dt = (NUMPY_TYPES if kind == NUMPY else torch_dtype_map()).get(x.dtype)
    if dt is None:
        raise TypeError(f"{arg}: unsupported dtype {x.dtype}")
    if dt.is_quantized != quantized:
        side = "an integer type (uint8, int8, … int64)" if quantized else "float32, bfloat16, float16 or float64"
        raise TypeError(f"{arg}: expected {side}, got dtype {x.dtype}")
    return dt


def torch_address(t: Any, arg: str) -> int:
    """The address of a contiguous CPU tensor's first element, after checking
    that its storage holds every byte from there to its last element (a
    storage can be resized under its views). A packed torch quantized tensor
    (quint4x2, quint2x4) counts its offset in elements, which its data_ptr()
    takes for bytes."""
    storage = t.untyped_storage()
    bits = torch_facts().packed_bits.get(t.dtype) if t.is_quantized else None
    if bits is not None:
        return _packed_address(t, storage, bits, arg)
    ptr = t.data_ptr()
    end = ptr - storage.data_ptr() + t.nbytes
    if end > storage.nbytes() and t.nbytes:
        raise ValueError(f"{arg}: its storage holds {storage.nbytes()} bytes, fewer than the {end} its elements span (was the storage resized?)")
    return ptr


def _packed_address(t: Any, storage: Any, bits: int, arg: str) -> int:
    n, offset = t.numel(), t.storage_offset()
    if n and offset * bits % 8:
        raise ValueError(f"{arg}: this view of {t.dtype} data starts inside a byte (element {offset}); slice at a multiple of {8 // bits} elements")
    start = offset * bits // 8
    end = start + (n * bits + 7) // 8
    if n and end > storage.nbytes():
        raise ValueError(f"{arg}: its storage holds {storage.nbytes()} bytes, fewer than the {end} its elements span (was the storage resized?)")
    return storage.data_ptr() + start



def read(x: Any, arg: str, *, quantized: bool) -> Buffer:
    """A read-only buffer of ``x``; a non-contiguous input is copied, and so
    is a tensor with the negative bit (torch's lazy negation), whose memory
    holds the negated values."""
    kind = kind_of(x, arg)
    dt = dtype_of(x, kind, arg, quantized=quantized)
    if kind == NUMPY:
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return Buffer(x, kind, x.ctypes.data, dt, x.shape, x.size)
    if x.requires_grad:
        x = x.detach()
    if x.is_neg():  # complex dtypes are refused above, so no conjugate bit can be set
        x = x.resolve_neg()
    if not x.is_contiguous():
        if dt.is_packed:  # torch cannot copy these either
            raise ValueError(f"{arg}: expected a contiguous {x.dtype} tensor (torch cannot copy packed quantized tensors)")
        x = x.contiguous()
    return Buffer(x, kind, torch_address(x, arg), dt, tuple(x.shape), x.numel())


def packed_bytes(t: Any, arg: str) -> Any:
    """The bytes of a packed torch quantized tensor (quint4x2, quint2x4) as a
    flat uint8 tensor sharing its memory (``int_repr()`` of a view reads from
    the wrong byte)."""
    buf = read(t, arg, quantized=True)
    start = buf.ptr - t.untyped_storage().data_ptr()
    torch = torch_facts().module
    return torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage(), start, (buf.dtype.nbytes(buf.numel),))


def storage_of(qdt: DataType, numel: int, quantized_tensor: bool = False) -> tuple[DataType, int]:
    """The element type and count of the array that holds ``numel`` values
    of ``qdt``: the type itself, except packed 2/4-bit types, which are
    uint8 bytes unless held by a torch quantized tensor (quint4x2, quint2x4)."""
    if quantized_tensor or not qdt.is_packed:
        return qdt, numel
    return DataType.UINT8, qdt.nbytes(numel)


def check_data(data: Buffer, qdt: DataType, numel: int, arg: str) -> None:
    """That an array is exactly the storage of ``numel`` ``qdt`` values:
    its element type and the byte length the call reads."""
    want_dt, want = storage_of(qdt, numel, data.kind == TORCH and data.array.is_quantized)
    if data.dtype is not want_dt:
        raise TypeError(f"{arg}: expected {want_dt.short_name} data for {qdt.short_name} values, got dtype {data.array.dtype}")
    if data.numel != want:
        raise ValueError(f"{arg}: has {data.numel} elements, {numel} {qdt.short_name} values need {want}")


class TorchFacts(NamedTuple):
    """What the adapters need of torch, looked up once, when the first
    tensor is seen (importing piquant does not import torch)."""

    module: Any
    strided: Any
    packed_bits: dict[Any, int]  # torch.quint4x2 / quint2x4 → bits per element
    storage: dict[DataType, Any]  # the torch dtype each type's data is stored as
    increment_version: Any  # bumps the autograd version counters of a tuple of tensors


@functools.cache
def torch_facts() -> TorchFacts:
    import torch

    storage = {d: getattr(torch, "uint8" if d.is_packed else d.short_name) for d in DataType if d.is_packed or hasattr(torch, d.short_name)}
    packed = {k: v.bit_size for k, v in torch_dtype_map().items() if v.is_packed}
    return TorchFacts(torch, torch.strided, packed, storage, torch._C._increment_version)


# bfloat16 and float8 arrays are ml_dtypes'.
NUMPY_TYPES = {numpy_storage(dt): dt for dt in DataType if not dt.is_packed and ((dt is not DataType.BF16 and not dt.is_float8) or has_numpy_bfloat16())}


def empty(kind: str, shape: tuple[int, ...], dt: DataType, *, zeros: bool = False) -> Buffer:
    """A new array for ``shape`` elements of ``dt`` (packed types: flat bytes)."""
    numel = math.prod(shape)
    storage_shape = (dt.nbytes(numel),) if dt.is_packed else shape
    if kind == NUMPY:
        a = (np.zeros if zeros else np.empty)(storage_shape, dtype=numpy_storage(dt))
        return Buffer(a, kind, a.ctypes.data, dt, shape, numel)
    torch = torch_facts().module
    t = (torch.zeros if zeros else torch.empty)(storage_shape, dtype=torch_storage(dt))
    return Buffer(t, kind, t.data_ptr(), dt, shape, numel)


def torch_storage(dt: DataType) -> Any:
    """The torch dtype a type's data is stored as (packed types: uint8)."""
    return torch_facts().storage[dt]


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
        if out.size != want_size:
            raise ValueError(f"{arg}: expected {want_size} elements, got {out.size}")
        ptr = out.ctypes.data
    else:
        check_torch(out, arg)
        want = torch_storage(dt)
        if out.dtype != want:
            raise ValueError(f"{arg}: expected dtype {want}, got {out.dtype}")
        if not out.is_contiguous():
            raise ValueError(f"{arg}: expected a contiguous tensor")
        if out.requires_grad:
            raise ValueError(f"{arg}: a tensor that requires grad cannot be written in place")
        check_writable_tensor(out, arg)
        if out.numel() != want_size:
            raise ValueError(f"{arg}: expected {want_size} elements, got {out.numel()}")
        ptr = torch_address(out, arg)
        mark_written(out)
    return Buffer(out, kind, ptr, dt, shape, numel)


def check_writable_tensor(out: Any, arg: str) -> None:
    """A tensor with the negative bit holds the negation of its values: the
    results written there would read back negated."""
    if out.is_neg():
        raise ValueError(f"{arg}: the tensor has the negative bit set (a lazy negation), so results written into it would read back negated; "
                         "pass a tensor without it")


def mark_written(out: Any) -> None:
    """Bumps a tensor's autograd version counter as torch's own in-place
    writes do, so that a backward pass that saved it raises instead of
    using the overwritten values (called as the tensor is handed to a
    kernel; a call that fails after it costs a spurious bump at worst)."""
    torch_facts().increment_version((out,))


def check_no_overlap(a: Buffer, b: Buffer, arg: str = "out") -> None:
    """Kernels read and write in parallel blocks: a destination that shares
    memory with its source would be read after it was overwritten."""
    a_end = a.ptr + a.dtype.nbytes(a.numel)
    b_end = b.ptr + b.dtype.nbytes(b.numel)
    if a.numel and b.numel and a.ptr < b_end and b.ptr < a_end:
        raise ValueError(f"{arg}: shares memory with the input; pass a separate array")
