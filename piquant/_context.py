"""Context: a kernel table and a thread pool (or the reference fallback)."""

from __future__ import annotations

import operator
import os
import threading
import weakref
from enum import Enum, unique
from typing import Any

import numpy as np

from . import _backend
from ._checks import check_scale, check_seed, check_zero_point, per_tensor_args
from ._dtypes import DataType, resolve


@unique
class RoundMode(Enum):
    NEAREST = 0
    STOCHASTIC = 1

    __hash__ = object.__hash__  # as DataType's: members are singletons; Enum's hash (of the name, in Python) is slow as a cache key


@unique
class ReduceOp(Enum):
    SET = 0
    ADD = 1

    __hash__ = object.__hash__


def _enum_value(value: Any, enum: type[Enum], arg: str) -> int:
    """The ABI value of an enum member or of its lower-case name."""
    if isinstance(value, enum):
        return value.value
    member = enum.__members__.get(value.upper()) if isinstance(value, str) and value.islower() else None
    if member is None:
        names = " or ".join(repr(m.lower()) for m in enum.__members__)
        raise ValueError(f"{arg}: expected {names} or a {enum.__name__}, got {value!r}")
    return member.value


_ROUND_NAMES = {m.name.lower(): m.value for m in RoundMode}
_REDUCE_NAMES = {m.name.lower(): m.value for m in ReduceOp}


def round_mode_value(mode: Any) -> int:
    v = _ROUND_NAMES.get(mode) if type(mode) is str else None
    return v if v is not None else _enum_value(mode, RoundMode, "round_mode")


def reduce_op_value(op: Any) -> int:
    v = _REDUCE_NAMES.get(op) if type(op) is str else None
    return v if v is not None else _enum_value(op, ReduceOp, "reduce")


class Context:
    """Owns a persistent thread pool and the kernels picked for this CPU.

    ``num_threads`` counts the calling thread (default: PIQUANT_NUM_THREADS,
    else the CPUs this process may use); ``isa`` forces a kernel variant
    (default: PIQUANT_ISA, else the best this CPU runs). Safe to share
    between threads. ``close()`` (or ``with``) frees it once the calls in
    flight on it return, and later calls raise RuntimeError; otherwise it is
    freed when garbage collected. After ``fork``, an inherited context runs
    on the calling thread alone.
    """

    _default: Context | None = None
    _default_lock = threading.Lock()

    def __init__(self, num_threads: int | None = None, *, isa: str | None = None) -> None:
        if num_threads is not None:
            num_threads = _thread_count(num_threads)
        if isa is not None and not isinstance(isa, str):
            raise TypeError(f"isa: expected a string such as 'avx2' or None, got {isa!r}")
        if isa is not None and "\0" in isa:
            raise ValueError(f"isa: expected a variant name, got {isa!r} (contains a NUL character)")
        kind = _backend.backend_choice()
        cls = _backend.NativeBackend if kind == "native" else _backend.ReferenceBackend
        self._backend: Any = cls(num_threads or 0, isa)
        self._finalizer = weakref.finalize(self, self._backend.close)
        self._closed = False  # finalizer.alive, read on every call for a tenth of its cost

    @staticmethod
    def get() -> Context:
        """The default context, created on first use."""
        if Context._default is None:
            with Context._default_lock:
                if Context._default is None:
                    Context._default = Context()
        return Context._default

    @property
    def backend(self) -> Any:
        return resolve_context(self)

    @property
    def num_threads(self) -> int:
        return self.backend.num_threads

    @property
    def isa(self) -> str:
        return self.backend.isa

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self is Context._default:
            Context._default = None
        self._closed = True
        self._finalizer()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "Context(closed)"
        return f"Context(num_threads={self.num_threads}, isa={self.isa!r})"

    # pi-quant's pointer-level API, checked instead of asserted.

    def quantize_ptr(self, ptr_in: int, dtype_in: DataType, ptr_out: int, dtype_out: DataType, numel: int,
                     scale: float, zero_point: int, round_mode: RoundMode, *, seed: int | None = None) -> None:
        src_dt = resolve(dtype_in, "dtype_in", quantized=False)
        dst_dt = resolve(dtype_out, "dtype_out", quantized=True)
        _check_ptrs(ptr_in, ptr_out, numel)
        _, mode, s, zp = per_tensor_args(dst_dt, round_mode, scale, zero_point, src_dt)  # dst_dt is resolved: its errors are named above
        _execute(resolve_context(self), _backend.QUANTIZE, src_dt, dst_dt, ptr_in, ptr_out, numel, s, zp, mode, 0,
                 0 if seed is None and mode == 0 else check_seed(seed, mode))

    def dequantize_ptr(self, ptr_in: int, dtype_in: DataType, ptr_out: int, dtype_out: DataType, numel: int,
                       scale: float, zero_point: int, reduce_op: ReduceOp) -> None:
        src_dt = resolve(dtype_in, "dtype_in", quantized=True)
        dst_dt = resolve(dtype_out, "dtype_out", quantized=False)
        _check_ptrs(ptr_in, ptr_out, numel)
        _execute(resolve_context(self), _backend.DEQUANTIZE, dst_dt, src_dt, ptr_in, ptr_out, numel, check_scale(scale, dst_dt),
                 check_zero_point(zero_point, src_dt), 0, reduce_op_value(reduce_op), 0)

    def compute_quant_params_ptr_float32(self, ptr: int, target_quant_dtype: DataType, numel: int) -> tuple[float, int]:
        _check_ptrs(ptr, ptr, numel)
        return self.backend.compute_params(ptr, DataType.F32, numel, resolve(target_quant_dtype, "target_quant_dtype", quantized=True), False)

    def compute_quant_params_ptr_bfloat16(self, ptr: int, target_quant_dtype: DataType, numel: int) -> tuple[float, int]:
        _check_ptrs(ptr, ptr, numel)
        return self.backend.compute_params(ptr, DataType.BF16, numel, resolve(target_quant_dtype, "target_quant_dtype", quantized=True), False)


def _execute(backend: Any, op: int, fdt: DataType, qdt: DataType, src: int, dst: int, n: int, scale: float, zp: int, mode: int, reduce: int,
             seed: int) -> None:
    execute = backend.execute_held if n <= _backend.HELD_MAX else backend.execute
    status = execute(backend.handle, _backend.pack_per_tensor(op, fdt._value_, qdt._value_, mode, reduce, 0, src, dst, n, scale, qdt.raw_zero_point(zp),
                                                              seed))
    if status:
        backend.fail(status)


def _thread_count(n: Any) -> int:
    """Any integer (Python, numpy) but a bool, from 1 to 1024."""
    if isinstance(n, (bool, np.bool_)):
        raise TypeError(f"num_threads: expected an integer from 1 to 1024 or None, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"num_threads: expected an integer from 1 to 1024 or None, got {n!r}") from None
    if not 1 <= n <= 1024:
        raise ValueError(f"num_threads: expected an integer from 1 to 1024 or None, got {n!r}")
    return n


def _after_fork_in_child() -> None:
    """A forked child gets a default context of its own (with a full pool)
    on first use; contexts it inherited run every call on the calling
    thread (see zig/pool.zig, orphan). The lock may have been held by a
    thread that does not exist in the child."""
    Context._default_lock = threading.Lock()
    Context._default = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_ptrs(ptr_in: int, ptr_out: int, numel: int) -> None:
    if not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel: expected a non-negative integer, got {numel!r}")
    if numel and (not ptr_in or not ptr_out):
        raise ValueError("ptr_in/ptr_out: expected non-NULL addresses")


def resolve_context(ctx: Context | None) -> Any:
    """The backend of ``ctx`` or of the default context."""
    if ctx is None:
        return (Context._default or Context.get())._backend  # closing the default context unsets it: it is never closed
    if not isinstance(ctx, Context):
        raise TypeError(f"ctx: expected a piquant.Context or None, got {type(ctx).__name__}")
    if ctx._closed:
        raise RuntimeError("Context: this context was closed")
    return ctx._backend
