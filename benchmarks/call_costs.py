"""What a small call costs, piece by piece (issue 14): attribute lookups,
buffer addresses, packing the call struct, the ctypes call itself, building
results, resolving dtypes, and whole calls for scale. Each piece is timed
inline in a timeit loop, in batches of about 10 µs (short enough that the
median misses the preemptions of a busy machine), less the loop's own cost;
the median and the minimum over batches, in nanoseconds per execution, at 64
elements on the default context (PIQUANT_NUM_THREADS).

    python benchmarks/call_costs.py [--seconds 0.3] [--json costs.json]

Not part of the package: it reaches into piquant's internals (the loaded
library, the context handle) to time the pieces the public call is made of.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import struct  # noqa: F401  a timed statement's name
import sys
import timeit
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

import piquant
import piquant.torch  # for piquant.torch.dequantize, a timed statement
from piquant import _arrays, _backend, _checks, _groups, _native  # noqa: F401  _checks, _groups: timed statements' names

# Names the timed statements use (PIECES, as strings):
from piquant._api import Quantized  # noqa: F401
from piquant._checks import check_scale, check_zero_point  # noqa: F401
from piquant._dtypes import DataType, resolve, torch_dtype_map  # noqa: F401

N = 64


class ParamsNT(NamedTuple):
    scale: float
    zero_point: int


@dataclass(frozen=True)
class ResultDC:
    data: Any
    dtype: Any
    shape: tuple[int, ...]
    scale: float
    zero_point: int


@dataclass(frozen=True, slots=True)
class ResultDCSlots:
    data: Any
    dtype: Any
    shape: tuple[int, ...]
    scale: float
    zero_point: int


class ResultNT(NamedTuple):
    data: Any
    dtype: Any
    shape: tuple[int, ...]
    scale: float
    zero_point: int


class ResultSlots:
    __slots__ = ("data", "dtype", "scale", "shape", "zero_point")

    def __init__(self, data: Any, dtype: Any, shape: tuple[int, ...], scale: float, zero_point: int) -> None:
        self.data, self.dtype, self.shape, self.scale, self.zero_point = data, dtype, shape, scale, zero_point


def signature(x: Any, dtype: Any = "uint8", *, scale: Any = None, zero_point: Any = None, symmetric: bool = False, round_mode: Any = "nearest",
              seed: Any = None, axis: Any = None, group_size: Any = None, out: Any = None, ctx: Any = None) -> None:
    """quantize's signature, doing nothing."""


def setup() -> dict[str, Any]:
    """Every name the timed statements use."""
    ctx = piquant.Context.get()
    torch.set_num_threads(ctx.num_threads)
    lib = _backend.library()
    handle = ctx.backend._ctx
    raw = ctypes.CDLL(_backend.library_path())  # the same library, functions without argtypes
    raw_execute = raw.piquant_execute
    raw_execute.restype = ctypes.c_int
    # Without argtypes a Python int is passed as a C int: pointers must be wrapped.
    handle_v, call_v = ctypes.c_void_p(handle), None
    x = np.random.default_rng(0).standard_normal(N, dtype=np.float32)
    t = torch.from_numpy(x.copy())
    s, zp = piquant.compute_params(x, "uint8")
    q8 = np.empty(N, np.uint8)
    qt8 = torch.empty(N, dtype=torch.uint8)
    fmt = _native.packer(_native.Call)  # NativeBackend.run's packing of piquant_call
    buf = bytearray(fmt.size)
    pin = ctypes.c_char.from_buffer(buf)
    addr = ctypes.addressof(pin)
    fmt.pack_into(buf, 0, 0, 0, 20, 0, 0, 0, x.ctypes.data, q8.ctypes.data, N, s, zp, 0, 0, 0, 0, 0, 0)
    call = _native.Call(0, 0, 20, 0, 0, 0, x.ctypes.data, q8.ctypes.data, N, s, zp, 0)
    packed = fmt.pack(0, 0, 20, 0, 0, 0, x.ctypes.data, q8.ctypes.data, N, s, zp, 0, 0, 0, 0, 0, 0)
    # Targets of the packing pieces, never executed (their addresses are dummies).
    scratch_buf = bytearray(fmt.size)
    scratch_call = _native.Call()
    call_addr = ctypes.addressof(call)
    call_v = ctypes.c_void_p(call_addr)
    call_ref = ctypes.byref(call)
    execute_ptr = lib.piquant_execute  # argtypes [c_void_p, c_void_p]
    execute_struct = ctypes.CDLL(_backend.library_path()).piquant_execute
    execute_struct.argtypes, execute_struct.restype = [ctypes.c_void_p, ctypes.POINTER(_native.Call)], ctypes.c_int
    qdt, fdt = DataType.UINT8, DataType.F32
    np_types = {np.dtype(np.float32): fdt, np.dtype(np.uint8): qdt}
    torch_types = {torch.float32: fdt, torch.uint8: qdt}
    names = {"uint8": qdt, qdt: qdt}
    fields = {"data": q8, "dtype": qdt, "shape": (N,), "scale": s, "zero_point": zp, "axis": None, "group_size": None}
    tq = torch.quantize_per_tensor(t, s, zp, torch.quint8)
    q = piquant.quantize(x, "uint8", scale=s, zero_point=zp)
    qt = piquant.quantize(t, "uint8", scale=s, zero_point=zp)
    out_f = np.empty(N, np.float32)
    # The layers of the call path, and the floor: what no Python layer can skip.
    src, srct = _arrays.read(x, "x", quantized=False), _arrays.read(t, "x", quantized=False)
    be = ctx.backend
    pack12 = _backend._CALL_PER_TENSOR.pack
    cf, ad = ctypes.c_char.from_buffer, ctypes.addressof
    f32, u8 = fdt, qdt
    # Per channel: 64 channels of one element (t2), torch parameters as compute_params gives them.
    t2 = t.reshape(N, 1)
    S, Z = piquant.compute_params(t2, "uint8", axis=0)
    S64 = S.double()
    tqc = torch.quantize_per_channel(t2, S64, Z, 0, torch.quint8)
    lay = _groups.layout(srct[4], 0, None)
    sets = _groups.checked(S, Z, f32, u8, lay)
    pack17 = _backend._CALL.pack
    # Group-wise int4, g=32, at 4,096 elements (numpy), beside the per-tensor call of the same data.
    xg = np.random.default_rng(1).standard_normal(4096, dtype=np.float32)
    gS, gZ = piquant.compute_params(xg, "int4", symmetric=True, group_size=32)
    ps, pz = piquant.compute_params(xg, "int4", symmetric=True)
    qg = np.empty(2048, np.uint8)
    i4 = DataType.INT4.value
    return {**globals(), **locals()}


PIECES: list[tuple[str, str, str]] = [
    # (group, label, statement)
    ("python call", "a function with quantize's signature, 4 arguments given", "signature(x, 'uint8', scale=s, zero_point=zp, out=q8)"),
    ("attribute lookups", "x.dtype (numpy)", "x.dtype"),
    ("attribute lookups", "x.flags.c_contiguous (numpy)", "x.flags.c_contiguous"),
    ("attribute lookups", "x.size (numpy)", "x.size"),
    ("attribute lookups", "x.shape (numpy)", "x.shape"),
    ("attribute lookups", "type(x) is np.ndarray", "type(x) is np.ndarray"),
    ("attribute lookups", "isinstance(x, np.ndarray)", "isinstance(x, np.ndarray)"),
    ("attribute lookups", "t.dtype (torch)", "t.dtype"),
    ("attribute lookups", "t.is_contiguous() (torch)", "t.is_contiguous()"),
    ("attribute lookups", "t.device.type (torch)", "t.device.type"),
    ("attribute lookups", "t.is_cpu (torch)", "t.is_cpu"),
    ("attribute lookups", "t.requires_grad (torch)", "t.requires_grad"),
    ("attribute lookups", "t.numel() (torch)", "t.numel()"),
    ("attribute lookups", "tuple(t.shape) (torch)", "tuple(t.shape)"),
    ("attribute lookups", "ctx.backend (property)", "ctx.backend"),
    ("attribute lookups", "Context._default", "piquant.Context._default"),
    ("buffer address", "x.ctypes.data (numpy)", "x.ctypes.data"),
    ("buffer address", "addressof(c_char.from_buffer(x)) (numpy, writable)", "ctypes.addressof(ctypes.c_char.from_buffer(x))"),
    ("buffer address", "x.__array_interface__['data'][0] (numpy)", "x.__array_interface__['data'][0]"),
    ("buffer address", "data and flags from the array's header (numpy; what read() and write() use)", "_arrays._head(_arrays._memory, id(x) + 16)"),
    ("buffer address", "t.data_ptr() (torch)", "t.data_ptr()"),
    ("struct packing", "struct.pack, 12 fields, params left zero (what NativeBackend.run does per tensor)",
     "pack12(0, 0, 20, 0, 0, 0, 1, 2, N, s, zp, 0)"),
    ("struct packing", "struct.pack, 17 fields, into new bytes (what NativeBackend.run does per set)",
     "fmt.pack(0, 0, 20, 0, 0, 0, 1, 2, N, s, zp, 0, 0, 0, 0, 0, 0)"),
    ("struct packing", "struct.pack_into, 17 fields", "fmt.pack_into(scratch_buf, 0, 0, 0, 20, 0, 0, 0, 1, 2, N, s, zp, 0, 0, 0, 0, 0, 0)"),
    ("struct packing", "Call: set 12 fields", "c = scratch_call; c.op = 0; c.float_type = 0; c.quant_type = 20; c.round_mode = 0; c.reduce_op = 0; "
     "c.reserved = 0; c.in_ = 1; c.out = 2; c.numel = N; c.scale = s; c.zero_point = zp; c.seed = 0"),
    ("struct packing", "Call: set the 4 fields a call changes", "c = scratch_call; c.in_ = 1; c.out = 2; c.numel = N; c.scale = s"),
    ("struct packing", "Call(12 args) constructed", "_native.Call(0, 0, 20, 0, 0, 0, 1, 2, N, s, zp, 0)"),
    ("ctypes call", "piquant_abi_version() (no arguments)", "lib.piquant_abi_version()"),
    ("ctypes call", "piquant_execute(h, addr): argtypes c_void_p, packed bytes (quantize 64)", "execute_ptr(handle, addr)"),
    ("ctypes call", "piquant_execute(h, bytes): argtypes c_void_p, the call packed per call (quantize 64)", "execute_ptr(handle, packed)"),
    ("ctypes call", "piquant_execute(h, addr): argtypes c_void_p, a Call's address (quantize 64)", "execute_ptr(handle, call_addr)"),
    ("ctypes call", "piquant_execute(h, byref(call)): argtypes POINTER(Call)", "execute_struct(handle, call_ref)"),
    ("ctypes call", "piquant_execute(h, addr): no argtypes, c_void_p objects made once", "raw_execute(handle_v, call_v)"),
    ("ctypes call", "piquant_execute(h, byref(call)): no argtypes", "raw_execute(handle_v, call_ref)"),
    ("ctypes call", "piquant_execute(h, addr): no argtypes, c_void_p(addr) made per call", "raw_execute(handle_v, ctypes.c_void_p(call_addr))"),
    ("ctypes call", "piquant_quantize(10 arguments), argtypes", "lib.piquant_quantize(handle, call.in_, 0, call.out, 20, N, s, zp, 0, 0)"),
    ("result construction", "np.empty(64, uint8)", "np.empty(N, np.uint8)"),
    ("result construction", "np.empty(64, float32)", "np.empty(N, np.float32)"),
    ("result construction", "np.empty_like(x)", "np.empty_like(x)"),
    ("result construction", "torch.empty(64, dtype=uint8)", "torch.empty(N, dtype=torch.uint8)"),
    ("result construction", "torch.empty((64,), dtype=uint8): a tuple of sizes", "torch.empty((N,), dtype=torch.uint8)"),
    ("result construction", "torch.empty(64) float32", "torch.empty(N)"),
    ("result construction", "torch.empty_like(t)", "torch.empty_like(t)"),
    ("result construction", "torch.from_numpy(np.empty(64, uint8))", "torch.from_numpy(np.empty(N, np.uint8))"),
    ("result construction", "Quantized(...) (its __init__ sets __dict__ at once)", "Quantized(q8, qdt, (N,), s, zp)"),
    ("result construction", "frozen dataclass, 5 fields", "ResultDC(q8, qdt, (N,), s, zp)"),
    ("result construction", "frozen dataclass(slots=True), 5 fields", "ResultDCSlots(q8, qdt, (N,), s, zp)"),
    ("result construction", "NamedTuple, 5 fields", "ResultNT(q8, qdt, (N,), s, zp)"),
    ("result construction", "__slots__ class, 5 fields", "ResultSlots(q8, qdt, (N,), s, zp)"),
    ("result construction", "QuantParams(s, zp) (NamedTuple)", "piquant.QuantParams(s, zp)"),
    ("result construction", "tuple (s, zp)", "(s, zp)"),
    ("dtype resolution", "resolve('uint8', 'dtype', quantized=True)", "resolve('uint8', 'dtype', quantized=True)"),
    ("dtype resolution", "dict.get('uint8')", "names.get('uint8')"),
    ("dtype resolution", "dict.get(DataType.UINT8)", "names.get(qdt)"),
    ("dtype resolution", "numpy dtype → DataType: dict.get(x.dtype)", "np_types.get(x.dtype)"),
    ("dtype resolution", "torch dtype → DataType: torch_dtype_map().get(t.dtype)", "torch_dtype_map().get(t.dtype)"),
    ("dtype resolution", "torch dtype → DataType: dict.get(t.dtype)", "torch_types.get(t.dtype)"),
    ("value checks", "check_scale(s, F32) (ctypes.c_float rounding)", "check_scale(s, fdt)"),
    ("value checks", "check_zero_point(zp, UINT8)", "check_zero_point(zp, qdt)"),
    ("value checks", "float32 rounding via struct", "struct.unpack('f', struct.pack('f', s))[0]"),
    ("input checks", "t's checks in read(): dtype, is_cpu, layout, is_nested, requires_grad, is_neg(), is_contiguous()",
     "t.dtype; t.is_cpu; t.layout; t.is_nested; t.requires_grad; t.is_neg(); t.is_contiguous()"),
    ("input checks", "t's storage bound (torch_address): untyped_storage(), data_ptr() ×2, nbytes ×2", "_arrays.torch_address(t, f32, 'x')"),
    ("input checks", "tuple(t.shape), t.numel()", "tuple(t.shape); t.numel()"),
    ("call path layers", "_arrays.read(x) (numpy)", "_arrays.read(x, 'x', quantized=False)"),
    ("call path layers", "_arrays.read(t) (torch)", "_arrays.read(t, 'x', quantized=False)"),
    ("call path layers", "_arrays.write(q8, ...) (numpy out=)", "_arrays.write(q8, src, u8, N)"),
    ("call path layers", "_arrays.write(qt8, ...) (torch out=)", "_arrays.write(qt8, srct, u8, N)"),
    ("call path layers", "_arrays.empty('numpy', ...)", "_arrays.empty('numpy', (N,), u8, numel=N)"),
    ("call path layers", "_arrays.empty('torch', ...)", "_arrays.empty('torch', (N,), u8, numel=N)"),
    ("call path layers", "per_tensor_args(...) (a combination seen before)", "_checks.per_tensor_args('uint8', 'nearest', s, zp, f32)"),
    ("call path layers", "backend.execute(handle, pack_per_tensor(...)) (quantize 64)",
     "be.execute(be.handle, pack12(0, 0, 20, 0, 0, 0, src[2], ad(cf(q8)), N, s, zp, 0))"),
    ("floor", "numpy out=: execute(pack(address of x, of out))",
     "execute_ptr(handle, pack12(0, 0, 20, 0, 0, 0, ad(cf(x)), ad(cf(q8)), N, s, zp, 0))"),
    ("floor", "numpy allocated: the same and np.empty",
     "a = np.empty(N, np.uint8); execute_ptr(handle, pack12(0, 0, 20, 0, 0, 0, ad(cf(x)), ad(cf(a)), N, s, zp, 0))"),
    ("floor", "torch out=: execute(pack(t.data_ptr(), out.data_ptr()))",
     "execute_ptr(handle, pack12(0, 0, 20, 0, 0, 0, t.data_ptr(), qt8.data_ptr(), N, s, zp, 0))"),
    ("floor", "torch allocated: the same and torch.empty",
     "a = torch.empty(N, dtype=torch.uint8); "
     "execute_ptr(handle, pack12(0, 0, 20, 0, 0, 0, t.data_ptr(), a.data_ptr(), N, s, zp, 0))"),
    ("floor", "torch, checked: the floor with read()'s checks of t and out", "t.dtype; t.is_cpu; t.layout; t.is_nested; t.requires_grad; t.is_neg(); "
     "t.is_contiguous(); qt8.dtype; qt8.is_cpu; qt8.layout; qt8.is_nested; qt8.requires_grad; qt8.is_neg(); qt8.is_contiguous(); "
     "execute_ptr(handle, pack12(0, 0, 20, 0, 0, 0, _arrays.torch_address(t, f32, 'x'), _arrays.torch_address(qt8, u8, 'out'), N, s, zp, 0))"),
    ("per channel", "_groups.layout(shape, 0, None) (a layout seen before)", "_groups.layout(srct[4], 0, None)"),
    ("per channel", "_groups.checked(S, Z): torch parameters used in place", "_groups.checked(S, Z, f32, u8, lay)"),
    ("per channel", "_groups.as_arrays(sets): the given tensors handed back", "_groups.as_arrays(sets, f32, lay, 'torch')"),
    ("per channel", "floor, out=: execute(pack17(4 data_ptr()))",
     "execute_ptr(handle, pack17(0, 0, 20, 0, 0, 0, t2.data_ptr(), qt8.data_ptr(), N, 0.0, 0, 0, S.data_ptr(), Z.data_ptr(), N, 1, 0))"),
    ("per channel", "floor, allocated: the same and torch.empty",
     "a = torch.empty(N, 1, dtype=torch.uint8); "
     "execute_ptr(handle, pack17(0, 0, 20, 0, 0, 0, t2.data_ptr(), a.data_ptr(), N, 0.0, 0, 0, S.data_ptr(), Z.data_ptr(), N, 1, 0))"),
    ("per channel", "piquant.quantize(t2, 'uint8', scale=S, zero_point=Z, axis=0)", "piquant.quantize(t2, 'uint8', scale=S, zero_point=Z, axis=0)"),
    ("per channel", "torch.quantize_per_channel(t2, S64, Z, 0, quint8)", "torch.quantize_per_channel(t2, S64, Z, 0, torch.quint8)"),
    ("per channel", "piquant.dequantize(tqc) (torch per-channel quantized tensor)", "piquant.dequantize(tqc)"),
    ("per channel", "tqc.dequantize()", "tqc.dequantize()"),
    ("group-wise, 4,096", "floor, per tensor int4: execute(pack12(2 addresses))",
     "execute_ptr(handle, pack12(0, 0, i4, 0, 0, 0, ad(cf(xg)), ad(cf(qg)), 4096, ps, pz, 0))"),
    ("group-wise, 4,096", "floor, g=32 int4: execute(pack17(4 addresses))",
     "execute_ptr(handle, pack17(0, 0, i4, 0, 0, 0, ad(cf(xg)), ad(cf(qg)), 4096, 0.0, 0, 0, ad(cf(gS)), ad(cf(gZ)), 128, 32, 0))"),
    ("group-wise, 4,096", "piquant.quantize(xg, 'int4', scale=ps, zero_point=pz) (per tensor)",
     "piquant.quantize(xg, 'int4', scale=ps, zero_point=pz)"),
    ("group-wise, 4,096", "piquant.quantize(xg, 'int4', scale=gS, zero_point=gZ, group_size=32)",
     "piquant.quantize(xg, 'int4', scale=gS, zero_point=gZ, group_size=32)"),
    ("whole calls", "torch.quantize_per_tensor(t, s, zp, quint8)", "torch.quantize_per_tensor(t, s, zp, torch.quint8)"),
    ("whole calls", "tq.dequantize()", "tq.dequantize()"),
    ("whole calls", "piquant.dequantize(tq) (torch quantized tensor)", "piquant.dequantize(tq)"),
    ("whole calls", "piquant.torch.dequantize(tq, scale=, zero_point=, dtype=float32) (pi-quant's API)",
     "piquant.torch.dequantize(tq, scale=s, zero_point=zp, dtype=torch.float32)"),
    ("whole calls", "piquant.quantize(x, 'uint8', scale=, zero_point=, out=) (numpy)", "piquant.quantize(x, 'uint8', scale=s, zero_point=zp, out=q8)"),
    ("whole calls", "piquant.quantize(t, 'uint8', scale=, zero_point=, out=) (torch)", "piquant.quantize(t, 'uint8', scale=s, zero_point=zp, out=qt8)"),
    ("whole calls", "piquant.quantize(x, 'uint8', scale=, zero_point=) (numpy, allocated)", "piquant.quantize(x, 'uint8', scale=s, zero_point=zp)"),
    ("whole calls", "piquant.quantize(t, 'uint8', scale=, zero_point=) (torch, allocated)", "piquant.quantize(t, 'uint8', scale=s, zero_point=zp)"),
    ("whole calls", "piquant.dequantize(q) (numpy Quantized, allocated)", "piquant.dequantize(q)"),
    ("whole calls", "piquant.dequantize(q, out=) (numpy Quantized)", "piquant.dequantize(q, out=out_f)"),
]


def time_ns(stmt: str, names: dict[str, Any], seconds: float) -> tuple[float, float]:
    """(median, min) ns per execution of stmt over batches of ~10 µs: short
    batches, so that the median skips the preemptions of a busy machine."""
    timer = timeit.Timer(stmt, globals=names)
    number, total = timer.autorange()
    per = total / number
    k = max(1, int(10e-6 / per))
    samples = max(50, min(20_000, int(seconds / (k * per))))
    times = [t / k * 1e9 for t in timer.repeat(samples, k)]
    return statistics.median(times), min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time spent on each piece (after calibration)")
    parser.add_argument("--json", metavar="PATH", help="also write the medians here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torch's deprecation of quantized tensors
    names = setup()
    loop = time_ns("pass", names, args.seconds)[0]
    rows = []
    group = None
    print(f"piquant {piquant.__version__}, {piquant.info()['isa']}, {names['ctx'].num_threads} threads, n = {N}; "
          f"ns per piece (median and min over ~10 µs batches), less the timeit loop ({loop:.0f} ns)")
    for g, label, stmt in PIECES:
        med, low = (v - loop for v in time_ns(stmt, names, args.seconds))
        rows.append({"group": g, "piece": label, "median_ns": med, "min_ns": low})
        if g != group:
            print(f"\n{g}")
            group = g
        print(f"  {label:78} {med:9.0f} {low:9.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
