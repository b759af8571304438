"""Adapts numpy arrays and torch tensors to flat buffers the kernels use, so
that the operations in _api.py are written once for both."""

from __future__ import annotations

import ctypes
import functools
import math
import struct
import sys
from typing import Any, NamedTuple

import numpy as np

from ._dtypes import _NP_STORAGE, DataType, has_numpy_bfloat16, numpy_storage, torch_dtype_map

NUMPY = "numpy"
TORCH = "torch"


# What read() returns: the contiguous numpy array / torch tensor whose
# memory is used, its kind, address, element type, shape and count. A plain
# tuple the callers unpack: building, freeing and reading a NamedTuple by
# name cost ~2k of the ~32k instructions of a small call (callgrind).
Buffer = tuple[Any, str, int, DataType, tuple[int, ...], int]


def kind_of(x: Any, arg: str) -> str:
    if type(x) is np.ndarray or isinstance(x, np.ndarray):
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


def float_type_of(out: Any, arg: str) -> DataType:
    """The float DataType of an output array, checked as dtype_of does; a
    numpy array of a float type, the common case, in one dict lookup."""
    if type(out) is np.ndarray:
        dt = NUMPY_TYPES.get(out.dtype)
        if dt is not None and dt._value_ < 16:
            return dt
    return dtype_of(out, kind_of(out, arg), arg, quantized=False)


def address(a: Any, arg: str) -> int:
    """The address of the first element of a contiguous numpy array, or of
    a CPU tensor of any strides (parameter arrays, used where they lie)
    after checking that its storage holds every element its strides reach
    (see torch_address; ``arg`` names it). A numpy array's is read from its
    header (see _head)."""
    tp = type(a)
    if tp is not np.ndarray and (tp is _torch_tensor or not isinstance(a, np.ndarray)):  # a tensor (or a subclass: Parameter)
        ptr: int = a.data_ptr()
        if a.numel():
            last = a.storage_offset()
            for n, step in zip(a.shape, a.stride()):  # a loop, not sum() of a generator: half the time
                last += (n - 1) * step
            storage = a.untyped_storage()
            end = (last + 1) * a.itemsize
            if end > storage.nbytes():
                raise _storage_error(arg, storage, end)
        return ptr
    ptr, _ = _head(_memory, id(a) + 16) if _memory is not None else _flags(a)
    return ptr


# A numpy array's data pointer and flags, read from its object: numpy's
# PyArrayObject_fields begin with PyObject_HEAD, then char *data, int nd,
# dimensions, strides, base, descr and int flags; PyArray_DATA and
# PyArray_FLAGS are macros reading these offsets in every compiled numpy
# extension, so the layout is numpy's ABI (checked below on probe arrays).
# struct over a memoryview of the address space reads both in ~1.4k
# instructions, half of c_char.from_buffer (which builds a memoryview, the
# buffer's format string and a ctypes object) and a tenth of a.ctypes.data.
# Where the probe fails (a CPython build with another object header: debug,
# free-threaded), _memory is None and _flags asks numpy instead.
_memory: memoryview | None = memoryview((ctypes.c_char * sys.maxsize).from_address(0)).cast("B")
_head = struct.Struct("=Q40xI").unpack_from  # at id(array) + 16: (data, flags)
_C_CONTIGUOUS, _WRITEABLE, _WARN_ON_WRITE = 0x1, 0x400, 0x80000000  # numpy's NPY_ARRAY_* flag bits
_from_buffer: Any = ctypes.c_char.from_buffer  # exports a C-contiguous writable buffer, or raises
_addressof = ctypes.addressof


def _flags(a: np.ndarray) -> tuple[int, int]:
    """What _head reads, through numpy's API. The buffer export, where it
    succeeds, proves the array C-contiguous and writable and gives numpy's
    warning for a write to shared memory, so _WARN_ON_WRITE is never set."""
    try:
        return _addressof(_from_buffer(a)), _C_CONTIGUOUS | _WRITEABLE
    except (ValueError, TypeError):  # not both, an empty array, or a dtype without a buffer format
        f = a.flags
        return a.ctypes.data, (_C_CONTIGUOUS if f.c_contiguous else 0) | (_WRITEABLE if f.writeable else 0)


def _head_matches() -> bool:
    a = np.arange(12, dtype=np.uint8)
    ro = a[:4]
    ro.flags.writeable = False
    for probe, flags in ((a, _C_CONTIGUOUS | _WRITEABLE), (a[1::2], _WRITEABLE), (ro, _C_CONTIGUOUS)):
        assert _memory is not None
        ptr, got = _head(_memory, id(probe) + 16)
        if ptr != probe.ctypes.data or got & (_C_CONTIGUOUS | _WRITEABLE) != flags:
            return False
    return True


if sys.implementation.name != "cpython" or not _head_matches():  # id() is an address only in CPython
    _memory = None


def torch_address(t: Any, dt: DataType, arg: str) -> int:
    """The address of a contiguous CPU tensor's first element, after checking
    that its storage holds every byte from there to its last element (a
    storage can be resized under its views); ``dt`` is its element type. A
    packed torch quantized tensor (quint4x2, quint2x4: the only packed
    types torch holds) counts its offset in elements, which its data_ptr()
    takes for bytes."""
    storage = t.untyped_storage()
    if dt._bits < 8:  # type: ignore[attr-defined]
        return _packed_address(t, storage, dt._bits, arg)  # type: ignore[attr-defined]
    ptr: int = t.data_ptr()
    nbytes = t.nbytes
    end = ptr - storage.data_ptr() + nbytes
    if end > storage.nbytes() and nbytes:
        raise _storage_error(arg, storage, end)
    return ptr


def _storage_error(arg: str, storage: Any, end: int) -> ValueError:
    return ValueError(f"{arg}: its storage holds {storage.nbytes()} bytes, fewer than the {end} its elements span (was the storage resized?)")


def _packed_address(t: Any, storage: Any, bits: int, arg: str) -> int:
    n, offset = t.numel(), t.storage_offset()
    if n and offset * bits % 8:
        raise ValueError(f"{arg}: this view of {t.dtype} data starts inside a byte (element {offset}); slice at a multiple of {8 // bits} elements")
    start = offset * bits // 8
    end = start + (n * bits + 7) // 8
    if n and end > storage.nbytes():
        raise _storage_error(arg, storage, end)
    return storage.data_ptr() + start


def read(x: Any, arg: str, *, quantized: bool) -> Buffer:
    """A read-only buffer of ``x``; a non-contiguous input is copied, and so
    is a tensor with the negative bit (torch's lazy negation), whose memory
    holds the negated values."""
    tp = type(x)
    if tp is np.ndarray:  # the common cases first, checked as below but in one pass
        dt = NUMPY_TYPES.get(x.dtype)
        if dt is not None and (dt._value_ >= 16) == quantized:
            ptr, flags = _head(_memory, id(x) + 16) if _memory is not None else _flags(x)
            if flags & _C_CONTIGUOUS:  # others take the path below
                return x, NUMPY, ptr, dt, x.shape, x.size
    elif tp is _torch_tensor:
        # Each torch attribute read or method call costs 0.3-1k instructions
        # (callgrind), so the common case reads only what decides it. A tensor
        # that requires grad is read where it lies: x.detach() has the same
        # memory, and nothing here records autograd history.
        dt = _torch_types.get(x.dtype)
        if (dt is not None and (dt._value_ >= 16) == quantized and x.is_cpu and x.layout is _strided and not x.is_nested and x.is_contiguous()
                and not x.is_neg()):
            if dt._bits < 8:  # type: ignore[attr-defined]
                return x, TORCH, torch_address(x, dt, arg), dt, tuple(x.shape), x.numel()
            storage = x.untyped_storage()  # torch_address, inline
            ptr = x.data_ptr()
            nbytes = x.nbytes
            if ptr - storage.data_ptr() + nbytes > storage.nbytes() and nbytes:
                raise _storage_error(arg, storage, ptr - storage.data_ptr() + nbytes)
            return x, TORCH, ptr, dt, tuple(x.shape), nbytes // (dt._bits >> 3)  # type: ignore[attr-defined]  # x.numel(), without a call
    kind = kind_of(x, arg)
    dt = dtype_of(x, kind, arg, quantized=quantized)
    if kind == NUMPY:
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return x, kind, address(x, arg), dt, x.shape, x.size
    if x.requires_grad:
        x = x.detach()
    if x.is_neg():  # complex dtypes are refused above, so no conjugate bit can be set
        if dt.is_float8:
            raise ValueError(f"{arg}: the {x.dtype} tensor has the negative bit set (a lazy negation), which torch cannot resolve for "
                             "float8 types; pass a tensor without it")
        x = x.resolve_neg()
    if not x.is_contiguous():
        if dt.is_packed:  # torch cannot copy these either
            raise ValueError(f"{arg}: expected a contiguous {x.dtype} tensor (torch cannot copy packed quantized tensors)")
        x = x.contiguous()
    return x, kind, torch_address(x, dt, arg), dt, tuple(x.shape), x.numel()


def packed_bytes(t: Any, arg: str) -> Any:
    """The bytes of a packed torch quantized tensor (quint4x2, quint2x4) as a
    flat uint8 tensor sharing its memory (``int_repr()`` of a view reads from
    the wrong byte)."""
    _, _, ptr, dt, _, numel = read(t, arg, quantized=True)
    start = ptr - t.untyped_storage().data_ptr()
    torch = torch_facts().module
    return torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage(), start, (dt.nbytes(numel),))


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
    array, kind, _, dt, _, count = data
    want_dt, want = storage_of(qdt, numel, kind == TORCH and array.is_quantized)
    if dt is not want_dt:
        raise TypeError(f"{arg}: expected {want_dt.short_name} data for {qdt.short_name} values, got dtype {array.dtype}")
    if count != want:
        raise ValueError(f"{arg}: has {count} elements, {numel} {qdt.short_name} values need {want}")


class TorchFacts(NamedTuple):
    """What the adapters need of torch, looked up once, when the first
    tensor is seen (importing piquant does not import torch)."""

    module: Any
    strided: Any
    storage: dict[DataType, Any]  # the torch dtype each type's data is stored as
    per_tensor_schemes: tuple[Any, ...]  # the affine qschemes of torch quantized tensors
    per_channel_schemes: tuple[Any, ...]


# Set with the facts: what read() and write() test a tensor against without a call.
_torch_tensor: Any = None
_torch_types: dict[Any, DataType] = {}
_torch_storage: dict[DataType, Any] = {}
_strided: Any = None
_torch_empty: Any = None
_increment_version: Any = None  # bumps the autograd version counters of a tuple of tensors
_torch_numpy: dict[Any, np.dtype] = {}  # the numpy dtype of .numpy() of a tensor, for the types of parameter arrays


@functools.cache
def torch_facts() -> TorchFacts:
    global _torch_tensor, _torch_types, _torch_storage, _strided, _torch_empty, _increment_version, _torch_numpy
    import torch

    storage = {d: getattr(torch, "uint8" if d.is_packed else d.short_name) for d in DataType if d.is_packed or hasattr(torch, d.short_name)}
    _torch_tensor, _torch_types, _torch_storage, _strided = torch.Tensor, torch_dtype_map(), storage, torch.strided
    _increment_version = torch._C._increment_version
    _torch_empty = torch.empty
    _torch_numpy = {getattr(torch, n): np.dtype(n) for n in ("float32", "float64", "int64", "uint64") if hasattr(torch, n)}
    return TorchFacts(torch, torch.strided, storage, (torch.per_tensor_affine, torch.per_tensor_symmetric),
                      (torch.per_channel_affine, torch.per_channel_symmetric))


# bfloat16 and float8 arrays are ml_dtypes'.
NUMPY_TYPES = {numpy_storage(dt): dt for dt in DataType if not dt.is_packed and ((dt is not DataType.BF16 and not dt.is_float8) or has_numpy_bfloat16())}


def empty(kind: str, shape: tuple[int, ...], dt: DataType, *, zeros: bool = False, numel: int | None = None) -> tuple[Any, int]:
    """A new array for ``shape`` elements of ``dt`` (packed types: flat
    bytes) and its address; ``numel``, if the caller knows it, is
    ``math.prod(shape)``. A pair, not a Buffer: the caller knows the rest."""
    if numel is None:
        numel = math.prod(shape)
    storage_shape = ((numel * dt._bits + 7) >> 3,) if dt._bits < 8 else shape  # type: ignore[attr-defined]
    if kind == NUMPY:
        a = (np.zeros if zeros else np.empty)(storage_shape, dtype=_NP_STORAGE.get(dt) or numpy_storage(dt))
        ptr, _ = _head(_memory, id(a) + 16) if _memory is not None else _flags(a)  # address(a), inline
        return a, ptr
    storage = _torch_storage.get(dt) or torch_facts().storage[dt]
    make = torch_facts().module.zeros if zeros else _torch_empty
    # torch 2.13 parses sizes given one by one in a fifth of the time of a tuple of them
    t = make(*storage_shape, dtype=storage) if storage_shape else make((), dtype=storage)
    return t, t.data_ptr()


def torch_storage(dt: DataType) -> Any:
    """The torch dtype a type's data is stored as (packed types: uint8)."""
    return torch_facts().storage[dt]


def write(out: Any, src: Buffer, dt: DataType, numel: int, arg: str = "out", *, in_place: bool = False,
          storage: Any = None, src_arg: str = "the input") -> tuple[Any, int]:
    """``out`` as the destination of a call reading ``src``: it must be the
    same kind of array, contiguous, writable, of the exact storage dtype
    (``storage``, a numpy or torch dtype, if not dt's: piquant.mx's
    one-byte codes and scales) and size, and apart from ``src`` (see
    `check_apart`; named ``src_arg``), unless ``in_place`` allows it to be
    ``src`` itself. It is never copied, so results land in the caller's
    memory or an error is raised. Returns ``out`` and its address (a pair,
    as `empty`)."""
    _, kind, src_ptr, src_dt, _, src_numel = src
    got = NUMPY if type(out) is np.ndarray else TORCH if type(out) is _torch_tensor else kind_of(out, arg)
    if got != kind:
        raise TypeError(f"{arg}: expected a {kind} array like the input, got a {got} one")
    bits = dt._bits  # type: ignore[attr-defined]
    nbytes = (numel * bits + 7) >> 3
    want_size = nbytes if bits < 8 else numel
    if kind == NUMPY:
        want = storage if storage is not None else _NP_STORAGE.get(dt) or numpy_storage(dt)  # the function raises what is missing
        if out.dtype is not want and out.dtype != want:
            raise ValueError(f"{arg}: expected dtype {want}, got {out.dtype}")
        ptr, flags = _head(_memory, id(out) + 16) if _memory is not None else _flags(out)
        if flags & (_C_CONTIGUOUS | _WRITEABLE | _WARN_ON_WRITE) != _C_CONTIGUOUS | _WRITEABLE:
            if not flags & _C_CONTIGUOUS:
                raise ValueError(f"{arg}: expected a C-contiguous array")
            # numpy warns when memory it shares (np.broadcast_arrays) is written, and
            # reading the flag gives that warning (numpy 2.4 refuses such an array a
            # writable buffer export)
            if not (flags & _WRITEABLE and out.flags.writeable):
                raise ValueError(f"{arg}: the array is read-only")
        if out.size != want_size:
            raise ValueError(f"{arg}: expected {want_size} elements, got {out.size}")
    else:
        if not out.is_cpu or out.layout is not _strided or out.is_nested:
            check_torch(out, arg)
        want = storage if storage is not None else _torch_storage[dt]
        if out.dtype is not want:  # torch dtypes are singletons
            raise ValueError(f"{arg}: expected dtype {want}, got {out.dtype}")
        if not out.is_contiguous():
            raise ValueError(f"{arg}: expected a contiguous tensor")
        if out.requires_grad:
            raise ValueError(f"{arg}: a tensor that requires grad cannot be written in place")
        if out.is_neg():  # it holds the negation of its values: results written there would read back negated
            raise ValueError(f"{arg}: the tensor has the negative bit set (a lazy negation), so results written into it would read back negated; "
                             "pass a tensor without it")
        out_nbytes = out.nbytes  # its element count times the size of want, without numel()'s call
        if out_nbytes != want_size * (want.itemsize if storage is not None else 1 if bits < 8 else bits >> 3):
            raise ValueError(f"{arg}: expected {want_size} elements, got {out.numel()}")
        if bits < 8:  # packed types: plain bytes
            ptr = torch_address(out, DataType.UINT8, arg)
        else:  # torch_address, inline
            storage = out.untyped_storage()
            ptr = out.data_ptr()
            end = ptr - storage.data_ptr() + out_nbytes
            if end > storage.nbytes() and out_nbytes:
                raise _storage_error(arg, storage, end)
    src_nbytes = (src_numel * src_dt._bits + 7) >> 3  # type: ignore[attr-defined]
    if ptr < src_ptr + src_nbytes and src_ptr < ptr + nbytes and not (in_place and ptr == src_ptr):  # check_apart raises, unless one is empty
        check_apart(arg, ptr, nbytes, src_arg, src_ptr, src_nbytes)
    if kind == TORCH:
        # Bumps its autograd version counter as torch's own in-place writes
        # do, so that a backward pass that saved it raises instead of using
        # the overwritten values.
        _increment_version((out,))
    return out, ptr


def check_apart(arg: str, ptr: int, nbytes: int, other: str, other_ptr: int, other_nbytes: int) -> None:
    """That the ``nbytes`` a call writes at ``ptr`` share no byte with the
    ``other_nbytes`` it reads at ``other_ptr``: kernels read and write in
    parallel blocks, so a shared byte would be read after it was overwritten."""
    if nbytes and other_nbytes and ptr < other_ptr + other_nbytes and other_ptr < ptr + nbytes:
        raise ValueError(f"{arg}: shares memory with {other}; pass a separate array")
