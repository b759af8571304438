"""The two engines behind a Context: the native library, and the numpy
reference as a fallback. Both take raw buffer addresses, so the array
adapters above them are shared."""

from __future__ import annotations

import ctypes
import os
import threading
import warnings
from typing import Any

import numpy as np

from . import _native
from ._dtypes import DataType
from ._groups import Sets, as_numpy, check_values, new_sets

_lib: Any = None
_lib_path: str | None = None
_load_error: str | None = None


def backend_choice() -> str:
    """'native' or 'reference', from PIQUANT_BACKEND (default: native, with
    the reference as a fallback)."""
    choice = os.environ.get("PIQUANT_BACKEND", "").strip().lower()
    if choice not in ("", "native", "reference"):
        raise ValueError(f"PIQUANT_BACKEND: expected 'native' or 'reference', got {choice!r}")
    if choice == "reference":
        return "reference"
    if library() is None:
        if choice == "native" or _native.explicit_path():
            raise OSError(f"PIQUANT_BACKEND=native, but {_load_error}" if choice == "native" else _load_error)
        warnings.warn(f"piquant: using the slow numpy reference backend: {_load_error}", RuntimeWarning, stacklevel=3)
        return "reference"
    return "native"


def library() -> Any:
    """The loaded native library, or None if it cannot be loaded."""
    global _lib, _lib_path, _load_error
    if _lib is None and _load_error is None:
        try:
            _lib, path = _native.load()
            _lib_path = str(path)
        except OSError as e:
            _load_error = str(e)
    return _lib


def library_path() -> str | None:
    library()
    return _lib_path


def available_isas() -> list[str]:
    lib = library()
    if lib is None:
        return []
    mask = lib.piquant_isa_mask()
    return [lib.piquant_isa_name(i).decode() for i in range(32) if mask >> i & 1]


# piquant_op: the operation a piquant_call (one call of any form) runs.
QUANTIZE, DEQUANTIZE, FAKE_QUANTIZE = 0, 1, 2
# One struct and one ctypes argument cost less than ten arguments
# (benchmarks/call_costs.py); packed into bytes, which the library only reads.
_CALL = _native.packer(_native.Call)
_CALL_PER_TENSOR = _native.packer(_native.Call, zeroed="params")  # params.count = 0: scale and zero_point are used
# A per-tensor call, packed by its caller and run by ``backend.execute(backend.handle,
# call)`` (``execute_held`` for at most HELD_MAX elements; a status; nonzero: ``backend.fail(status)`` raises it): called
# inline, without a Python frame between the entry point and the library.
# The zero point is the ABI's int64 (DataType.raw_zero_point).
pack_per_tensor = _CALL_PER_TENSOR.pack
# Calls of at most this many elements keep the GIL (backend.execute_held):
# they last microseconds, less than releasing and retaking it costs.
HELD_MAX = 1 << 16
_F32, _F64 = DataType.F32.value, DataType.F64.value
_UINT64 = DataType.UINT64


# What a call returns through pointers, one set per thread (each call reads
# it back before the thread makes another): made once instead of per call.
_per_thread = threading.local()


class NativeBackend:
    name = "native"

    def __init__(self, num_threads: int, isa: str | None) -> None:
        lib = self._lib = library()
        handle = ctypes.c_void_p()
        status = lib.piquant_context_create(num_threads, isa.encode() if isa is not None else None, ctypes.byref(handle))
        if status:
            _native.raise_status(lib, status)
        # The handle stays valid after close: the library then answers every
        # call on it with PIQUANT_ERR_CLOSED, so a call that read it before
        # close() raises instead of touching freed memory.
        self._ctx = handle.value
        self.isa = lib.piquant_isa_name(lib.piquant_context_isa(self._ctx)).decode()
        # What the hot calls pass: ctypes takes an instance of an argument's
        # own type as it is, where an int costs an isinstance miss and a
        # conversion (~0.5k instructions, callgrind).
        self.handle = ctypes.c_void_p(self._ctx)
        self.execute = lib.piquant_execute  # (handle, call) -> status
        self.execute_held = _native.holding_gil(lib, "piquant_execute")  # the same, for calls of at most HELD_MAX elements
        self._compute_params = lib.piquant_compute_params
        self._compute_params_held = _native.holding_gil(lib, "piquant_compute_params")

    @property
    def num_threads(self) -> int:
        """1 in a forked child for a context made before the fork."""
        return int(self._lib.piquant_context_num_threads(self._ctx))

    def close(self) -> None:
        """Waits for the calls in flight, then frees the pool; later calls raise."""
        self._lib.piquant_context_destroy(self._ctx)

    def fail(self, status: int) -> None:
        _native.raise_status(self._lib, status)

    def run_sets(self, op: int, fdt: DataType, qdt: DataType, src: int, dst: int, n: int, mode: int, reduce: int, seed: int, sets: Sets) -> None:
        """One call (piquant_call) with sets of parameters per channel or
        group (sets.count >= 1): quantize from the fdt buffer src into the
        qdt buffer dst, dequantize from qdt src into fdt dst, or
        fake-quantize fdt to fdt. The library checks the sets and answers a
        status."""
        call = _CALL.pack(op, fdt._value_, qdt._value_, mode, reduce, 0, src, dst, n, 0.0, 0, seed, sets.scales_ptr, sets.zero_points_ptr,
                          sets.count, sets.inner, _F32 if sets.scales.itemsize == 4 else _F64)
        status = self.execute(self.handle, call)
        if status:
            _native.raise_status(self._lib, status)

    def _check(self, status: int) -> None:
        if status:
            _native.raise_status(self._lib, status)

    def compute_params_sets(self, src: int, src_dt: DataType, n: int, q_dt: DataType, symmetric: bool, count: int, inner: int) -> Sets:
        # Scales in the compute precision, as the caller gets them: no float64 copy to narrow.
        wide = src_dt is DataType.F64
        zps = np.empty(count, np.int64)
        sets = new_sets(np.empty(count, np.float64 if wide else np.float32), zps.view(np.uint64) if q_dt is DataType.UINT64 else zps, count, inner)
        self._check(self._lib.piquant_compute_params_grouped(
            self._ctx, src, src_dt.value, n, q_dt.value, int(symmetric), count, inner, sets.scales_ptr, _F64 if wide else _F32, sets.zero_points_ptr
        ))
        return sets

    def gguf_quantize(self, src: int, src_dt: DataType, dst: int, gguf_type: int, n: int) -> None:
        self._check(self._lib.piquant_gguf_quantize(self._ctx, src, src_dt.value, dst, gguf_type, n))

    def gguf_dequantize(self, src: int, gguf_type: int, dst: int, dst_dt: DataType, n: int) -> None:
        self._check(self._lib.piquant_gguf_dequantize(self._ctx, src, gguf_type, dst, dst_dt.value, n))

    def mx_quantize(self, src: int, src_dt: DataType, data: int, scales: int, n: int, row: int, fmt: str, block_size: int, scale_mode: str,
                    mode: int, seed: int, per_tensor_scale: float | None) -> None:
        """piquant.mx's blocks of n elements (rows of `row`) into codes at data and scales at scales."""
        p = None if per_tensor_scale is None else ctypes.c_float(per_tensor_scale)
        self._check(self._lib.piquant_mx_quantize(
            self._ctx, src, src_dt.value, data, scales, n, row, MX_FORMATS.index(fmt), block_size, SCALE_MODES.index(scale_mode), mode, seed,
            None if p is None else ctypes.addressof(p),
        ))

    def mx_dequantize(self, data: int, scales: int, dst: int, dst_dt: DataType, n: int, row: int, fmt: str, block_size: int,
                      per_tensor_scale: float | None) -> None:
        p = None if per_tensor_scale is None else ctypes.c_float(per_tensor_scale)
        self._check(self._lib.piquant_mx_dequantize(
            self._ctx, data, scales, dst, dst_dt.value, n, row, MX_FORMATS.index(fmt), block_size, None if p is None else ctypes.addressof(p),
        ))

    def compute_params(self, src: int, src_dt: DataType, n: int, q_dt: DataType, symmetric: bool) -> tuple[float, int]:
        try:
            scale, zp = _per_thread.params_out
        except AttributeError:
            scale, zp = _per_thread.params_out = ctypes.c_double(), ctypes.c_int64()
        # The c_double and c_int64 themselves, not byref()s of them: ctypes
        # passes an instance of a pointer's target type by reference after one
        # isinstance hit, where a byref() takes three isinstance misses (~3k
        # instructions a call, callgrind).
        status = (self._compute_params_held if n <= HELD_MAX else self._compute_params)(self.handle, src, src_dt._value_, n, q_dt._value_,
                                                                                        1 if symmetric else 0, scale, zp)
        if status:
            _native.raise_status(self._lib, status)
        raw = zp.value
        return scale.value, raw + (1 << 64) if raw < 0 and q_dt is _UINT64 else raw  # DataType.zero_point_from_raw, inline


def _view(ptr: int, nbytes: int, dtype: Any) -> np.ndarray:
    if nbytes == 0:
        return np.empty(0, dtype)
    return np.frombuffer(memoryview((ctypes.c_char * nbytes).from_address(ptr)), dtype=dtype)


def _float_view(ptr: int, dt: DataType, n: int) -> np.ndarray:
    """bfloat16 as its raw uint16 bits, so that ml_dtypes is not needed."""
    return _view(ptr, dt.nbytes(n), np.uint16 if dt is DataType.BF16 else dt.short_name)


class ReferenceBackend:
    """Runs piquant_reference on numpy views of the same buffers."""

    name = "reference"
    isa = "reference"
    handle = None

    def __init__(self, num_threads: int, isa: str | None) -> None:
        import piquant_reference

        self._ref = piquant_reference
        self.num_threads = 1

    def close(self) -> None:
        pass

    def fail(self, status: int) -> None:  # execute raises instead
        raise AssertionError(status)

    def execute(self, handle: None, call: bytes) -> int:
        """NativeBackend.execute of a per-tensor call (pack_per_tensor's bytes)
        on the reference: raises what the library reports."""
        op, f, q, mode, reduce, _, src, dst, n, scale, raw, seed = _CALL_PER_TENSOR.unpack(call)
        fdt, qdt = DataType(f), DataType(q)
        zp = qdt.zero_point_from_raw(raw)
        if op == QUANTIZE:
            self.quantize(src, fdt, dst, qdt, n, scale, zp, mode, seed)
        elif op == DEQUANTIZE:
            self.dequantize(src, qdt, dst, fdt, n, scale, zp, reduce)
        else:
            self.fake_quantize(src, fdt, dst, n, qdt, scale, zp, mode, seed, reduce)
        return 0

    execute_held = execute

    def run_sets(self, op: int, fdt: DataType, qdt: DataType, src: int, dst: int, n: int, mode: int, reduce: int, seed: int, sets: Sets) -> None:
        """NativeBackend.run_sets on the reference."""
        sets = sets._replace(scales=as_numpy(sets.scales).reshape(-1), zero_points=as_numpy(sets.zero_points).reshape(-1))
        if op == QUANTIZE:
            self.quantize_sets(src, fdt, dst, qdt, n, sets, mode, seed)
        elif op == DEQUANTIZE:
            self.dequantize_sets(src, qdt, dst, fdt, n, sets, reduce)
        else:
            self.fake_quantize_sets(src, fdt, dst, n, qdt, sets, mode, seed, reduce)

    def _quant_view(self, ptr: int, dt: DataType, n: int) -> np.ndarray:
        return _view(ptr, dt.nbytes(n), self._ref.storage_dtype(dt.short_name))

    def quantize(self, src: int, src_dt: DataType, dst: int, dst_dt: DataType, n: int, scale: float, zp: int, mode: int, seed: int) -> None:
        x = _float_view(src, src_dt, n)
        q = self._ref.quantize(x, dst_dt.short_name, scale, zp, round_mode=_ROUND[mode], seed=seed, float_dtype=src_dt.short_name)
        self._quant_view(dst, dst_dt, n)[...] = q

    def dequantize(self, src: int, src_dt: DataType, dst: int, dst_dt: DataType, n: int, scale: float, zp: int, op: int) -> None:
        q = self._quant_view(src, src_dt, n)
        out = _float_view(dst, dst_dt, n)
        self._ref.dequantize(q, src_dt.short_name, scale, zp, numel=n, out_dtype=dst_dt.short_name, out=out, reduce=_REDUCE[op])

    def fake_quantize(self, src: int, dt: DataType, dst: int, n: int, q_dt: DataType, scale: float, zp: int, mode: int, seed: int, op: int) -> None:
        x = _float_view(src, dt, n)
        out = _float_view(dst, dt, n)
        self._ref.fake_quantize(
            x, q_dt.short_name, scale, zp, round_mode=_ROUND[mode], seed=seed, float_dtype=dt.short_name, out=out, reduce=_REDUCE[op]
        )

    def compute_params(self, src: int, src_dt: DataType, n: int, q_dt: DataType, symmetric: bool) -> tuple[float, int]:
        x = _float_view(src, src_dt, n)
        p = self._ref.compute_params(x, q_dt.short_name, symmetric, float_dtype=src_dt.short_name)
        return float(p.scale), int(p.zero_point)


    # Grouped calls: the flat buffers as (outer, count, inner) with the sets along axis 1.

    def quantize_sets(self, src: int, src_dt: DataType, dst: int, dst_dt: DataType, n: int, sets: Sets, mode: int, seed: int) -> None:
        check_values(sets, src_dt, dst_dt)
        x = _float_view(src, src_dt, n).reshape(-1, sets.count, sets.inner)
        q = self._ref.quantize(x, dst_dt.short_name, sets.scales, sets.zero_points, round_mode=_ROUND[mode], seed=seed,
                               float_dtype=src_dt.short_name, axis=1)
        self._quant_view(dst, dst_dt, n)[...] = q.reshape(-1)

    def dequantize_sets(self, src: int, src_dt: DataType, dst: int, dst_dt: DataType, n: int, sets: Sets, op: int) -> None:
        check_values(sets, dst_dt, src_dt)
        self._ref.dequantize(self._quant_view(src, src_dt, n), src_dt.short_name, sets.scales, sets.zero_points, numel=n,
                             out_dtype=dst_dt.short_name, out=_float_view(dst, dst_dt, n), reduce=_REDUCE[op],
                             shape=(n // (sets.count * sets.inner), sets.count, sets.inner), axis=1)

    def fake_quantize_sets(self, src: int, dt: DataType, dst: int, n: int, q_dt: DataType, sets: Sets, mode: int, seed: int, op: int) -> None:
        check_values(sets, dt, q_dt)
        x = _float_view(src, dt, n).reshape(-1, sets.count, sets.inner)
        self._ref.fake_quantize(x, q_dt.short_name, sets.scales, sets.zero_points, round_mode=_ROUND[mode], seed=seed,
                                float_dtype=dt.short_name, out=_float_view(dst, dt, n), reduce=_REDUCE[op], axis=1)

    def compute_params_sets(self, src: int, src_dt: DataType, n: int, q_dt: DataType, symmetric: bool, count: int, inner: int) -> Sets:
        x = _float_view(src, src_dt, n).reshape(-1, count, inner)
        p = self._ref.compute_params(x, q_dt.short_name, symmetric, float_dtype=src_dt.short_name, axis=1)
        return new_sets(p.scale, p.zero_point, count, inner)


    def gguf_quantize(self, src: int, src_dt: DataType, dst: int, gguf_type: int, n: int) -> None:
        fmt, spec, elements, size = _gguf_format(gguf_type)
        x = _float_view(src, src_dt, n)
        if src_dt is DataType.BF16:
            x = self._ref.bf16_bits_to_f32(x)
        _view(dst, n // elements * size, np.uint8)[...] = spec.quantize(x, fmt).reshape(-1)

    def gguf_dequantize(self, src: int, gguf_type: int, dst: int, dst_dt: DataType, n: int) -> None:
        fmt, spec, elements, size = _gguf_format(gguf_type)
        x = spec.dequantize(_view(src, n // elements * size, np.uint8), fmt)
        out = _float_view(dst, dst_dt, n)
        out[...] = self._ref.f32_to_bf16_bits(x) if dst_dt is DataType.BF16 else x.astype(out.dtype)


    def mx_quantize(self, src: int, src_dt: DataType, data: int, scales: int, n: int, row: int, fmt: str, block_size: int, scale_mode: str,
                    mode: int, seed: int, per_tensor_scale: float | None) -> None:
        from piquant_reference import mx

        x = _float_view(src, src_dt, n)
        if src_dt is DataType.BF16:
            x = self._ref.bf16_bits_to_f32(x)
        d, sc = mx.quantize(x, fmt, block_size, scale_mode, _ROUND[mode], seed if mode else None, per_tensor_scale)
        _view(data, mx_data_bytes(fmt, n), np.uint8)[...] = d.view(np.uint8)
        _view(scales, n // block_size, np.uint8)[...] = sc.view(np.uint8)

    def mx_dequantize(self, data: int, scales: int, dst: int, dst_dt: DataType, n: int, row: int, fmt: str, block_size: int,
                      per_tensor_scale: float | None) -> None:
        from piquant_reference import mx

        d = _view(data, mx_data_bytes(fmt, n), np.uint8)
        v = mx.dequantize(d, _view(scales, n // block_size, np.uint8), fmt, block_size, per_tensor_scale)
        out = _float_view(dst, dst_dt, n)
        out[...] = self._ref.f32_to_bf16_bits(v) if dst_dt is DataType.BF16 else v.astype(out.dtype)


# piquant_mx_format and piquant_scale_mode, in the ABI's order.
MX_FORMATS = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8", "nvfp4")
SCALE_MODES = ("floor", "rceil")


def mx_data_bytes(fmt: str, n: int) -> int:
    """Bytes of the codes of n elements: FP4 formats pack two a byte."""
    return n // 2 if fmt in ("mxfp4", "nvfp4") else n


GGUF_NAMES = {2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 39: "MXFP4"}


def _gguf_format(gguf_type: int) -> tuple[str, Any, int, int]:
    """A GGUF type's name, reference module, elements and bytes per block."""
    from piquant_reference import gguf, gguf_kquants

    fmt = GGUF_NAMES[gguf_type]
    if fmt in gguf_kquants.FORMATS:
        return fmt, gguf_kquants, gguf_kquants.BLOCK, gguf_kquants.FORMATS[fmt]
    return fmt, gguf, gguf.BLOCK, gguf.FORMATS[fmt]
_ROUND = ("nearest", "stochastic")
_REDUCE = ("set", "add")
