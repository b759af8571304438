"""The fast path of small calls: numpy or torch arrays, explicit parameters,
a preallocated ``out`` and the native backend. It checks what the general
path checks, in the cheapest way, and packs the call into one struct for
``piquant_execute`` (a ctypes call costs ~0.1 µs an argument). Anything
unusual — including every error — returns None, and the general path in
_api.py handles it and raises its exceptions.
"""

from __future__ import annotations

import ctypes
import secrets
import threading
from typing import Any

import numpy as np

from ._arrays import NUMPY_TYPES, check_torch, mark_written, storage_of, torch_address
from ._backend import NativeBackend
from ._checks import check_scale
from ._context import Context
from ._dtypes import DataType
from ._native import Call, packer

# piquant_call (zig/include/piquant.h), as _native declares it.
_CALL = packer(Call)
QUANTIZE, DEQUANTIZE, FAKE_QUANTIZE = 0, 1, 2

_local = threading.local()


def _call_buffer() -> tuple[bytearray, int]:
    """This thread's struct buffer and its address."""
    try:
        return _local.buf, _local.addr
    except AttributeError:
        buf = bytearray(_CALL.size)
        _local.pin = ctypes.c_char.from_buffer(buf)  # keeps the address valid
        _local.buf, _local.addr = buf, ctypes.addressof(_local.pin)
        return buf, _local.addr


class _Type:
    """What the fast path needs of a DataType, as plain attributes."""

    __slots__ = ("bits", "dt", "is_float", "packed", "qmax", "qmin", "value")

    def __init__(self, dt: DataType) -> None:
        self.dt, self.value, self.bits = dt, dt.value, dt.bit_size
        self.packed, self.is_float = dt.is_packed, dt.is_dequantized
        self.qmin, self.qmax = (dt.qmin, dt.qmax) if dt.is_quantized else (0, 0)


_TYPES = {dt: _Type(dt) for dt in DataType}


_NP_TYPES = {npd: _TYPES[dt] for npd, dt in NUMPY_TYPES.items()}
_QTYPES: dict[Any, _Type] = {dt.short_name: _TYPES[dt] for dt in DataType if dt.is_quantized} | {dt: _TYPES[dt] for dt in DataType if dt.is_quantized}
_UINT8 = _TYPES[DataType.UINT8]
_MODES: dict[Any, int] = {"nearest": 0, "stochastic": 1}
_REDUCE: dict[Any, int] = {"set": 0, "add": 1}
# Checked scales as used (float32-rounded unless float64), by precision.
_SCALES: dict[bool, dict[float, float]] = {False: {}, True: {}}
_torch_types: dict[Any, _Type] | None = None


def _buffer(a: Any, writable: bool) -> tuple[int, _Type, int] | None:
    """(address, element type, element count) of a contiguous, non-empty
    numpy array or CPU torch tensor, or None."""
    if type(a) is np.ndarray:
        flags = a.flags
        t = _NP_TYPES.get(a.dtype)
        if t is None or not flags.c_contiguous or a.size == 0:
            return None
        if flags.writeable:
            try:  # 3× cheaper than a.ctypes.data; needs a writable buffer numpy can export
                return ctypes.addressof(ctypes.c_char.from_buffer(a)), t, a.size  # type: ignore[arg-type]  # ndarray exports a buffer
            except ValueError:  # e.g. ml_dtypes.bfloat16 has no buffer-protocol format
                return a.ctypes.data, t, a.size
        return None if writable else (a.ctypes.data, t, a.size)
    if type(a).__name__ != "Tensor" or type(a).__module__ != "torch":
        return None
    global _torch_types
    if _torch_types is None:
        from ._dtypes import torch_dtype_map

        _torch_types = {k: _TYPES[v] for k, v in torch_dtype_map().items() if not str(k).startswith("torch.q")}
    t = _torch_types.get(a.dtype)
    if t is None or (writable and a.requires_grad) or a.is_neg():
        return None  # the general path resolves a negative view as input and refuses it as out
    try:
        check_torch(a, "")
        if not a.is_contiguous():
            return None
        n = a.numel()
        return (torch_address(a, ""), t, n) if n else None
    except (TypeError, ValueError):
        return None


def _scale(scale: Any, f64: bool) -> float | None:
    if type(scale) is not float:  # True == 1.0 and lists are unhashable: only floats use the cache
        return None
    cache = _SCALES[f64]
    s = cache.get(scale)
    if s is None:
        try:
            s = check_scale(scale, DataType.F64 if f64 else DataType.F32)
        except ValueError:
            return None
        if len(cache) > 4096:
            cache.clear()
        cache[scale] = s
    return s


def run(op: int, x: Any, qdtype: Any, scale: Any, zero_point: Any, mode: Any, reduce: Any, seed: Any, out: Any, ctx: Any,
        numel: int | None = None) -> tuple[DataType, float, int] | None:
    """Runs ``op`` from x into out if the fast path applies; returns (the
    quantized type, the scale used, the zero point) or None. ``numel``: a
    Quantized's element count, whose storage its data must be exactly
    (DEQUANTIZE)."""
    if out is None or type(zero_point) is not int or type(scale) is not float or type(x) is not type(out):
        return None  # the cheap tests first: a general call pays them twice
    src = _buffer(x, writable=False)
    dst = _buffer(out, writable=True)
    if src is None or dst is None:
        return None
    (sp, st, n), (dp, dt, dn) = src, dst
    q = st if qdtype is None and op == DEQUANTIZE else _QTYPES.get(qdtype)
    m, r = _MODES.get(mode), _REDUCE.get(reduce)
    if q is None or m is None or r is None or not q.qmin <= zero_point <= q.qmax:
        return None
    if op == DEQUANTIZE:
        if numel is not None:  # a Quantized's data: exactly the storage of its values
            if (st.dt, n) != storage_of(q.dt, numel):
                return None
            n = numel  # packed: bytes in, numel values out
        elif st is not q:
            return None
        if not dt.is_float or dn != n:
            return None
        f = dt
    elif op == QUANTIZE:
        f = st
        if not st.is_float or dt is not (_UINT8 if q.packed else q) or dn != ((n * q.bits + 7) >> 3 if q.packed else n):
            return None
    else:
        f = st
        if not st.is_float or dt is not st or dn != n:
            return None
    s = _scale(scale, f.bits == 64)
    if ctx is None:
        ctx = Context._default or Context.get()
    elif type(ctx) is not Context:
        return None
    backend = ctx._backend
    if s is None or type(backend) is not NativeBackend or not backend._ctx:  # a closed context has no handle
        return None
    in_bytes = (n * q.bits + 7) >> 3 if op == DEQUANTIZE else n * (st.bits >> 3)
    if sp < dp + dn * (dt.bits >> 3) and dp < sp + in_bytes and not (op == FAKE_QUANTIZE and sp == dp):
        return None  # overlapping: the general path explains
    if seed is None:
        seed = secrets.randbits(64) if m == 1 else 0
    elif type(seed) is not int or not 0 <= seed < 1 << 64:
        return None
    buf, addr = _call_buffer()
    _CALL.pack_into(buf, 0, op, f.value, q.value, m, r, 0, sp, dp, n, s, q.dt.raw_zero_point(zero_point), seed)
    if type(out) is not np.ndarray:
        mark_written(out)
    if backend._execute(backend._ctx, addr):
        return None  # let the general path raise the error
    return q.dt, s, zero_point
