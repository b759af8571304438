"""``python -m piquant bench``: piquant against the peers present on this
machine, side by side in one run, with the memory roofline of the same run.

Peers: torch's quantized-tensor ops (``quantize_per_tensor``, ``.dequantize()``,
``aminmax``-based parameters, ``fake_quantize_per_tensor_affine``), torch's
decomposed ops (``torch.ops.quantized_decomposed``, where torch is moving as it
deprecates quantized tensors), pi-quant (``pypiquant``, in a virtual
environment of its own because it installs the same import name), and the
numpy reference. A peer that is missing or cannot do a row is reported as
skipped, with the reason.

Roofline efficiency = (bytes read + bytes written) / time ÷ the bandwidth of
a streaming copy (a read, for compute_params) of the same size on the same
threads (``piquant_stream``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import venv
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import piquant
import piquant.mx
import piquant_reference as ref

from . import _backend, _bench_calls
from ._bench_calls import CALLS, CallRow

SIZES = (64, 4_096, 65_536, 1_048_576, 27_264_000)
PEERS = ("torch", "torch decomposed", "torchao", "gguf", "ggml", "pi-quant", "reference")
ROW_LENGTH = 1024  # group-wise rows quantize x as (n / 1024, 1024)
PI_QUANT = "pypiquant==4.1.0"
# Seconds of timing per measurement (after a warm-up call), and at least this
# many calls. Calls under 10 µs reach the 2000-call cap either way; 0.1 s gives
# a 27M-element row about 20 calls, whose median holds within a few percent
# where 4 calls (0.02 s) swung by a fifth between two runs of one kernel.
BUDGET = {"quick": 0.1, "full": 0.25}
MIN_REPEATS = {"quick": 3, "full": 10}
REFERENCE_MAX = {"quick": 1_048_576, "full": 27_264_000}
# Rows on torch-allocated memory run above this size: numpy asks for
# transparent huge pages on large arrays (madvise), torch's allocator does not,
# and streaming kernels see the difference in TLB misses.
TORCH_MEMORY_MIN = 1_048_576


@dataclass(frozen=True)
class Row:
    op: str  # quantize, dequantize, compute_params, fake_quantize, gguf_quantize, gguf_dequantize, mx_quantize
    float_dtype: str
    quant_dtype: str  # a GGUF type name for the gguf_ ops, a piquant.mx format for mx_quantize
    round_mode: str = "nearest"
    reduce: str = "set"
    group: int = 0  # group_size of group-wise parameters; 0: per tensor
    memory: str = "numpy"  # who allocates the arrays: "numpy" (huge pages where the kernel gives them) or "torch"

    @property
    def name(self) -> str:
        return self._name + (" [torch memory]" if self.memory == "torch" else "")

    @property
    def _name(self) -> str:
        f = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "float64": "f64"}[self.float_dtype]
        if self.op == "gguf_quantize":
            return f"gguf {f}→{self.quant_dtype}"
        if self.op == "gguf_dequantize":
            return f"gguf {self.quant_dtype}→{f}"
        if self.op == "mx_quantize":
            return f"mx {f}→{self.quant_dtype}"
        if self.group:
            return f"{self.op} {f}→{self.quant_dtype} g={self.group}" if self.op == "quantize" else f"{self.op} {self.quant_dtype}→{f} g={self.group}"
        if self.op == "quantize":
            return f"quantize {f}→{self.quant_dtype}" + (" stochastic" if self.round_mode == "stochastic" else "")
        if self.op == "dequantize":
            return f"dequantize {self.quant_dtype}→{f}" + (" add" if self.reduce == "add" else "")
        if self.op == "fake_quantize":
            return f"fake_quantize {f} via {self.quant_dtype}"
        return f"compute_params {f}"

    def fits(self, n: int) -> bool:
        """Whether this row can run on n elements (whole groups and blocks)."""
        if self.op.startswith("gguf"):
            return n % piquant.gguf.block_size(self.quant_dtype) == 0
        if self.memory == "torch" and n <= TORCH_MEMORY_MIN:
            return False
        if self.op == "mx_quantize":
            return n % min(n, ROW_LENGTH) == 0 and min(n, ROW_LENGTH) % mx_block(self.quant_dtype) == 0
        return not self.group or (n % min(n, ROW_LENGTH) == 0 and min(n, ROW_LENGTH) % self.group == 0)

    def bytes_moved(self, n: int) -> int:
        """Bytes read plus bytes written by one call on n elements (group-wise:
        with the float64 scale and int64 zero point of each group)."""
        f = {"float64": 8, "float32": 4}.get(self.float_dtype, 2)
        if self.op.startswith("gguf"):
            return n * f + n // piquant.gguf.block_size(self.quant_dtype) * piquant.gguf.block_bytes(self.quant_dtype)
        if self.op == "mx_quantize":
            return n * f + _backend.mx_data_bytes(self.quant_dtype, n) + n // mx_block(self.quant_dtype)
        q = (n * ref.bits(self.quant_dtype) + 7) // 8 + (n // self.group * 16 if self.group else 0)
        return {
            "quantize": n * f + q,
            "dequantize": q + n * f * (2 if self.reduce == "add" else 1),
            "fake_quantize": 2 * n * f,
            "compute_params": n * f,
        }[self.op]


ROWS = (
    Row("quantize", "float32", "uint8"),
    Row("quantize", "float32", "uint8", round_mode="stochastic"),
    Row("quantize", "float32", "int8"),
    Row("quantize", "float32", "uint4"),
    Row("quantize", "bfloat16", "uint8"),
    Row("quantize", "float16", "uint8"),
    Row("dequantize", "float32", "uint8"),
    Row("dequantize", "float32", "uint8", reduce="add"),
    Row("dequantize", "float32", "uint4"),
    Row("dequantize", "bfloat16", "uint8"),
    Row("compute_params", "float32", "uint8"),
    Row("fake_quantize", "float32", "uint8"),
    Row("quantize", "float32", "int4"),
    Row("quantize", "float32", "int4", group=32),
    Row("quantize", "float32", "int4", group=128),
    Row("dequantize", "float32", "int4", group=32),
    Row("quantize", "float32", "float8_e4m3fn"),
    Row("dequantize", "float32", "float8_e4m3fn"),
    Row("gguf_quantize", "float32", "Q8_0"),
    Row("gguf_quantize", "float32", "Q4_0"),
    Row("gguf_quantize", "float32", "Q4_1"),
    Row("gguf_quantize", "float32", "Q5_0"),
    Row("gguf_quantize", "float32", "Q5_1"),
    Row("gguf_quantize", "float32", "MXFP4"),
    Row("gguf_quantize", "float32", "Q4_K"),
    Row("gguf_quantize", "float32", "Q5_K"),
    Row("gguf_quantize", "float32", "Q6_K"),
    Row("gguf_dequantize", "float32", "Q8_0"),
    Row("gguf_dequantize", "float32", "Q4_0"),
    Row("gguf_dequantize", "float32", "Q4_K"),
    Row("gguf_dequantize", "float32", "Q6_K"),
    *(Row("mx_quantize", "float32", fmt) for fmt in piquant.mx.FORMATS),
    # The rows pi-quant runs, on memory without huge pages (issue 15).
    Row("quantize", "float32", "uint8", memory="torch"),
    Row("quantize", "bfloat16", "uint8", memory="torch"),
    Row("dequantize", "float32", "uint8", memory="torch"),
    Row("dequantize", "float32", "uint8", reduce="add", memory="torch"),
    Row("dequantize", "bfloat16", "uint8", memory="torch"),
)


def mx_block(fmt: str) -> int:
    """The block size the MX rows use: torchao's default (NVFP4: 16)."""
    return 16 if fmt == "nvfp4" else 32


@dataclass
class Result:
    row: str
    n: int
    bytes: int
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    roofline_efficiency: float | None = None


def median_time(fn: Callable[[], Any], budget: float, min_repeats: int) -> float:
    fn()  # warm up: page faults, caches, pool start
    t = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t, 1e-7)
    times = []
    for _ in range(max(min_repeats, min(2000, int(budget / once)))):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ------------------------------------------------------------ inputs


class Inputs:
    """The arrays of one (row, n): the same memory for every in-process peer
    (torch tensors share numpy's buffers). Rows on torch memory get torch
    tensors, so that piquant's outputs, made like its inputs, are torch's too."""

    def __init__(self, row: Row, x32: np.ndarray, torch: Any) -> None:
        n = x32.size
        self.row, self.n, self.torch, self.x32 = row, n, torch, x32
        if row.group:
            x32 = x32.reshape(-1, min(n, ROW_LENGTH))
            self.scale, self.zero_point = piquant.compute_params(x32, row.quant_dtype, symmetric=True, group_size=row.group)
        elif not row.op.startswith(("gguf", "mx")):
            self.scale, self.zero_point = piquant.compute_params(x32, row.quant_dtype)
        self.x = self._float(x32, row.float_dtype)

    def _float(self, x32: np.ndarray, dtype: str) -> Any:
        if dtype == "float32":
            return self.torch.from_numpy(x32).clone() if self.row.memory == "torch" else x32
        if dtype == "float16":
            return x32.astype(np.float16)
        ml_dtypes = _optional("ml_dtypes")  # the bench extra's: numpy's bfloat16 arrays
        if self.row.memory == "torch" or (ml_dtypes is None and self.torch is not None):
            return self.torch.from_numpy(x32).to(self.torch.bfloat16)
        if ml_dtypes is None:
            raise ImportError("bfloat16 rows need ml_dtypes or torch (pip install ml_dtypes)")
        return x32.astype(ml_dtypes.bfloat16)

    def torch_x(self) -> Any:
        """x as a torch tensor on the same memory (a bfloat16 array by its bits)."""
        if not isinstance(self.x, np.ndarray):
            return self.x
        if self.row.float_dtype == "bfloat16":
            return self.torch.from_numpy(self.x.view(np.uint16)).view(self.torch.bfloat16)
        return self.torch.from_numpy(self.x)

    def bits_x(self) -> np.ndarray:
        """x as numpy memory, bfloat16 as its uint16 bits (the reference's form)."""
        if not isinstance(self.x, np.ndarray):
            return self.x.view(self.torch.int16).numpy().view(np.uint16)
        return self.x.view(np.uint16) if self.row.float_dtype == "bfloat16" else self.x

    def float_out(self) -> Any:
        """A zeroed output of the row's float type, the kind of self.x."""
        if isinstance(self.x, np.ndarray):
            return np.zeros(self.n, self.x.dtype)
        return self.torch.zeros(self.n, dtype=self.x.dtype)


# ------------------------------------------------------------ peers: in process

# Warnings of the peers that the bench expects: silenced, and said once in the notes.
_PEER_WARNINGS = {
    r"(?s).*quantized tensor creation functions.*deprecated": (
        "torch warns that its quantized tensor types are deprecated (they are its fastest per-tensor ops: timed as they are)"
    ),
}


@contextlib.contextmanager
def quiet_peers(notes: dict[str, str]) -> Iterator[None]:
    """Keeps the peers' expected warnings and log lines off the terminal, and
    records each in ``notes`` once. Other warnings are shown as usual."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
    for w in caught:
        msg = str(w.message)
        what = next((v for k, v in _PEER_WARNINGS.items() if re.match(k, msg)), None)
        if what is None:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            notes.setdefault("torch", what)


def import_torchao(notes: dict[str, str]) -> str | None:
    """Imports torchao without its native libraries (the bench uses its
    plain-torch quant_primitives; on this torch its .so files fail to load,
    each with a log line); None, or why it cannot be used."""
    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
    try:
        import torchao.prototype.mx_formats.mx_tensor
        import torchao.prototype.mx_formats.nvfp4_tensor
        import torchao.quantization.quant_primitives  # noqa: F401
    except ImportError:
        return "torchao is not installed (pip install torchao)"
    if os.environ["TORCHAO_FORCE_SKIP_LOADING_SO_FILES"] == "1":
        notes["torchao"] = ("its native libraries are not loaded (TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1): quant_primitives, to_mx and "
                            "nvfp4_quantize are plain torch")
    return None


def piquant_fn(inp: Inputs, ctx: piquant.Context) -> Callable[[], Any]:
    r = inp.row
    if r.op == "mx_quantize":
        x = inp.x.reshape(-1, min(inp.n, ROW_LENGTH))
        m = piquant.mx.quantize(x, r.quant_dtype)
        return lambda: piquant.mx.quantize(x, r.quant_dtype, out=(m.data, m.scales), ctx=ctx)
    if r.op == "gguf_quantize":
        blocks = piquant.gguf.quantize(inp.x, r.quant_dtype)
        return lambda: piquant.gguf.quantize(inp.x, r.quant_dtype, out=blocks, ctx=ctx)
    if r.op == "gguf_dequantize":
        blocks, out = piquant.gguf.quantize(inp.x, r.quant_dtype), inp.float_out()
        return lambda: piquant.gguf.dequantize(blocks, r.quant_dtype, out=out, ctx=ctx)
    s, zp = inp.scale, inp.zero_point
    if r.group:
        g = r.group
        if r.op == "quantize":
            out = piquant.quantize(inp.x, r.quant_dtype, scale=s, zero_point=zp, group_size=g).data
            return lambda: piquant.quantize(inp.x, r.quant_dtype, scale=s, zero_point=zp, out=out, ctx=ctx, group_size=g)
        q, out = piquant.quantize(inp.x, r.quant_dtype, scale=s, zero_point=zp, group_size=g), inp.float_out().reshape(inp.x.shape)
        return lambda: piquant.dequantize(q, out=out, ctx=ctx)
    if r.op == "quantize":
        out = piquant.quantize(inp.x, r.quant_dtype, scale=s, zero_point=zp).data
        return lambda: piquant.quantize(inp.x, r.quant_dtype, scale=s, zero_point=zp, round_mode=r.round_mode, out=out, ctx=ctx)
    if r.op == "dequantize":
        out = inp.float_out()
        q = piquant.quantize(inp.x, r.quant_dtype, scale=s, zero_point=zp)  # q.data of x's kind
        return lambda: piquant.dequantize(q, out=out, reduce=r.reduce, ctx=ctx)
    if r.op == "fake_quantize":
        out = inp.float_out()
        return lambda: piquant.fake_quantize(inp.x, r.quant_dtype, scale=s, zero_point=zp, out=out, ctx=ctx)
    return lambda: piquant.compute_params(inp.x, r.quant_dtype, ctx=ctx)


_TORCH_QTYPES = {"uint8": "quint8", "int8": "qint8", "uint4": "quint4x2", "uint2": "quint2x4", "int32": "qint32"}


def torch_fn(inp: Inputs) -> tuple[Callable[[], Any] | None, str | None]:
    torch, r = inp.torch, inp.row
    if r.op == "mx_quantize":
        return None, "torch has no MX quantization (torchao's is the peer)"
    if r.group or r.op.startswith("gguf"):
        return None, "torch has no group-wise or GGUF quantization"
    s, zp = float(inp.scale), int(inp.zero_point)
    qmin, qmax = ref.qrange(r.quant_dtype)
    xt = inp.torch_x()
    if r.op == "compute_params":
        return _bench_calls.torch_params(torch, xt, qmin, qmax), None
    if r.quant_dtype.startswith("float8"):
        return _torch_float8(torch, xt, inp, s)
    if r.quant_dtype not in _TORCH_QTYPES:
        return None, f"torch has no quantized {r.quant_dtype}"
    tq = getattr(torch, _TORCH_QTYPES[r.quant_dtype])
    if r.op == "quantize":
        if r.round_mode == "stochastic":
            return None, "torch has no stochastic rounding"
        if xt.dtype != torch.float32:
            return None, "torch.quantize_per_tensor takes float32 only"
        return lambda: torch.quantize_per_tensor(xt, s, zp, tq), None
    if r.op == "fake_quantize":
        return lambda: torch.fake_quantize_per_tensor_affine(xt, s, zp, qmin, qmax), None
    qt = torch.quantize_per_tensor(torch.from_numpy(inp.x32), s, zp, tq)
    fdt = getattr(torch, r.float_dtype)
    if r.reduce == "add":
        acc = torch.zeros(inp.n, dtype=fdt)
        return lambda: acc.add_(qt.dequantize()), None
    if fdt == torch.float32:
        return qt.dequantize, None
    return lambda: qt.dequantize().to(fdt), None


def _torch_float8(torch: Any, xt: Any, inp: Inputs, s: float) -> tuple[Callable[[], Any] | None, str | None]:
    """torch's scaled FP8 cast, the form torchao's float8 training uses."""
    r = inp.row
    if r.round_mode == "stochastic" or r.reduce == "add":
        return None, "torch's FP8 cast rounds to nearest and stores"
    tdt = getattr(torch, r.quant_dtype)
    top = float(torch.finfo(tdt).max)
    inv = torch.tensor(np.float32(1) / np.float32(s))
    if r.op == "quantize":
        return lambda: (xt * inv).clamp(-top, top).to(tdt), None
    q = (torch.from_numpy(inp.x32) * inv).clamp(-top, top).to(tdt)
    if r.op == "dequantize":
        return lambda: q.to(getattr(torch, r.float_dtype)) * s, None
    return lambda: ((xt * inv).clamp(-top, top).to(tdt).float() * s).to(xt.dtype), None


def decomposed_fn(inp: Inputs) -> tuple[Callable[[], Any] | None, str | None]:
    torch, r = inp.torch, inp.row
    from torch.ao.quantization.fx import _decomposed  # noqa: F401  registers the ops

    ops = torch.ops.quantized_decomposed
    if r.group or r.op.startswith(("gguf", "mx")):
        return None, "no group-wise, GGUF or MX decomposed op"
    s, zp = float(inp.scale), int(inp.zero_point)
    qmin, qmax = ref.qrange(r.quant_dtype)
    xt = inp.torch_x()
    if r.op == "compute_params":
        eps = torch.finfo(torch.float32).eps
        return lambda: ops.choose_qparams.tensor(xt, qmin, qmax, eps, torch.uint8), None
    if r.quant_dtype.startswith("float8"):
        return None, "no decomposed FP8 op (torch's scaled cast is the torch row)"
    if r.quant_dtype not in ("uint8", "int8"):
        return None, f"decomposed ops store one element per byte: no packed {r.quant_dtype}"
    if r.round_mode == "stochastic":
        return None, "torch has no stochastic rounding"
    tdt = getattr(torch, r.quant_dtype)
    if r.op == "quantize":
        return lambda: ops.quantize_per_tensor(xt, s, zp, qmin, qmax, tdt), None
    if r.op == "fake_quantize":
        return lambda: ops.dequantize_per_tensor(ops.quantize_per_tensor(xt, s, zp, qmin, qmax, tdt), s, zp, qmin, qmax, tdt), None
    q8 = ops.quantize_per_tensor(torch.from_numpy(inp.x32), s, zp, qmin, qmax, tdt)
    fdt = getattr(torch, r.float_dtype)
    if r.reduce == "add":
        acc = torch.zeros(inp.n, dtype=fdt)
        return lambda: acc.add_(ops.dequantize_per_tensor(q8, s, zp, qmin, qmax, tdt)), None
    return lambda: ops.dequantize_per_tensor(q8, s, zp, qmin, qmax, tdt, out_dtype=fdt), None


def torchao_fn(inp: Inputs) -> tuple[Callable[[], Any] | None, str | None]:
    """torchao's quantize_affine / dequantize_affine (plain torch ops) with
    block size (1, g), on group-wise rows."""
    r, torch = inp.row, inp.torch
    if r.op == "mx_quantize":
        return _torchao_mx(inp)
    if not r.group:
        return None, "torchao: measured on group-wise and MX rows"
    try:
        from torchao.quantization import quant_primitives as qp
    except ImportError:
        return None, "torchao is not installed (pip install torchao)"
    qmin, qmax = ref.qrange(r.quant_dtype)
    xt, block, tdt = inp.torch_x(), (1, r.group), torch.int8 if qmin < 0 else torch.uint8
    s, zp = torch.from_numpy(inp.scale), torch.from_numpy(inp.zero_point)
    if r.op == "quantize":
        return lambda: qp.quantize_affine(xt, block, s, zp, tdt, qmin, qmax), None
    q = qp.quantize_affine(xt, block, s, zp, tdt, qmin, qmax)
    return lambda: qp.dequantize_affine(q, block, s, zp, tdt, qmin, qmax), None


def _torchao_mx(inp: Inputs) -> tuple[Callable[[], Any] | None, str | None]:
    """torchao's prototype to_mx (FLOOR) and nvfp4_quantize: plain torch ops."""
    r, torch = inp.row, inp.torch
    if r.quant_dtype == "mxint8":
        return None, "torchao has no MXINT8"
    from torchao.prototype.mx_formats import constants, mx_tensor, nvfp4_tensor

    xt = inp.torch_x().reshape(-1, min(inp.n, ROW_LENGTH))
    if r.quant_dtype == "nvfp4":
        return lambda: nvfp4_tensor.nvfp4_quantize(xt, 16, None), None
    elem = {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp8_e5m2": torch.float8_e5m2, "mxfp6_e2m3": constants.DTYPE_FP6_E2M3,
            "mxfp6_e3m2": constants.DTYPE_FP6_E3M2, "mxfp4": torch.float4_e2m1fn_x2}[r.quant_dtype]
    return lambda: mx_tensor.to_mx(xt, elem, 32), None


def gguf_fn(inp: Inputs) -> tuple[Callable[[], Any] | None, str | None]:
    """The gguf package's numpy gguf.quants on GGUF rows."""
    r = inp.row
    if not r.op.startswith("gguf"):
        return None, "gguf: measured on GGUF rows"  # its MXFP4 is the GGUF row
    try:
        from gguf import GGMLQuantizationType, quants
    except ImportError:
        return None, "gguf is not installed (pip install gguf)"
    t = getattr(GGMLQuantizationType, r.quant_dtype)
    if r.op == "gguf_quantize":
        if piquant.gguf.block_size(r.quant_dtype) != piquant.gguf.BLOCK:
            return None, "gguf.quants cannot quantize the K-quants (it dequantizes them)"
        return lambda: quants.quantize(inp.x, t), None
    blocks = piquant.gguf.quantize(inp.x, t)
    return lambda: quants.dequantize(blocks, t), None


def ggml_fn(inp: Inputs) -> tuple[Callable[[], Any] | None, str | None]:
    """llama.cpp's C on GGUF rows (ggml-python): ``ggml_quantize_chunk``,
    its single-threaded reference quantizer, and the type's ``to_float``."""
    r = inp.row
    if not r.op.startswith("gguf"):
        return None, "ggml: measured on GGUF rows"
    import ctypes

    import ggml

    t = int(piquant.gguf._resolve(r.quant_dtype)[1])
    x = np.ascontiguousarray(inp.x, np.float32)
    blocks = piquant.gguf.quantize(x, r.quant_dtype)
    src, dst = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), blocks.ctypes.data_as(ctypes.c_void_p)
    if r.op == "gguf_quantize":
        return lambda: ggml.ggml_quantize_chunk(t, src, dst, 0, 1, x.size, None), None
    out = np.empty(x.size, np.float32)
    to_float = ggml.ggml_get_type_traits(t).contents.to_float
    ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    return lambda: to_float(dst, ptr, x.size), None


def reference_fn(inp: Inputs) -> tuple[Callable[[], Any] | None, str | None]:
    r = inp.row
    if r.op == "mx_quantize":
        from piquant_reference import mx

        x = inp.x.reshape(-1, min(inp.n, ROW_LENGTH))
        return lambda: mx.quantize(x, r.quant_dtype, mx_block(r.quant_dtype)), None
    if r.op.startswith("gguf"):
        from piquant_reference import gguf, gguf_kquants

        if r.quant_dtype in gguf_kquants.FORMATS:
            gguf = gguf_kquants

        if r.op == "gguf_quantize":
            return lambda: gguf.quantize(inp.x, r.quant_dtype), None
        blocks = gguf.quantize(inp.x, r.quant_dtype)
        return lambda: gguf.dequantize(blocks, r.quant_dtype), None
    if r.group:
        g = {"group_size": r.group}
        if r.op == "quantize":
            return lambda: ref.quantize(inp.x, r.quant_dtype, inp.scale, inp.zero_point, **g), None
        q = ref.quantize(inp.x, r.quant_dtype, inp.scale, inp.zero_point, **g)
        return lambda: ref.dequantize(q, r.quant_dtype, inp.scale, inp.zero_point, numel=inp.n, shape=inp.x.shape, **g), None
    s, zp = float(inp.scale), int(inp.zero_point)
    x = inp.bits_x()
    fd = r.float_dtype
    if r.op == "quantize":
        return lambda: ref.quantize(x, r.quant_dtype, s, zp, round_mode=r.round_mode, seed=1, float_dtype=fd), None
    if r.op == "fake_quantize":
        return lambda: ref.fake_quantize(x, r.quant_dtype, s, zp, float_dtype=fd), None
    if r.op == "compute_params":
        return lambda: ref.compute_params(x, r.quant_dtype, float_dtype=fd), None
    q = ref.quantize(inp.x32, r.quant_dtype, s, zp)
    out = np.zeros(inp.n, np.float32 if fd == "float32" else np.uint16)
    return lambda: ref.dequantize(q, r.quant_dtype, s, zp, numel=inp.n, out_dtype=fd, out=out, reduce=r.reduce), None


# ------------------------------------------------------------ peer: pi-quant


def pi_quant_venv() -> Path:
    """Where the bench keeps its virtual environment with pi-quant."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "piquant-bench" / PI_QUANT.replace("==", "-")


def pi_quant_python(explicit: str | None, log: Callable[[str], None]) -> tuple[str | None, str | None]:
    """The interpreter of a virtual environment with pi-quant: the one given,
    or one created (once) in the user's cache directory."""
    if explicit:
        return explicit, None
    cache = pi_quant_venv()
    py = cache / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if py.exists() and subprocess.run([str(py), "-I", "-c", "import piquant"], capture_output=True).returncode == 0:
        return str(py), None
    log(f"creating a virtual environment for pi-quant ({PI_QUANT}) in {cache} ...")
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(cache)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", PI_QUANT, "numpy"],
                       check=True, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        return None, f"could not install {PI_QUANT}: {detail.strip().splitlines()[-1] if detail.strip() else e}"
    return str(py), None


def run_pi_quant(py: str, cases: list[tuple[Row, int]], threads: int, mode: str) -> tuple[list[float | None], list[str | None]]:
    req = {
        "threads": threads,
        "budget": BUDGET[mode],
        "min_repeats": MIN_REPEATS[mode],
        "cases": [dict(asdict(row), row=row.name, n=n) for row, n in cases],
    }
    script = Path(__file__).with_name("_peer_pi_quant.py")
    out = subprocess.run([py, "-I", str(script)], input=json.dumps(req), capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    return res["medians"], res["skipped"]


# ------------------------------------------------------------ the run


class Progress:
    """A one-line progress bar on stderr (a line per 10% when not a terminal)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.tty = total, 0, sys.stderr.isatty()
        self.last_decile = -1

    def step(self, what: str) -> None:
        self.done += 1
        frac = self.done / self.total
        if self.tty:
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r[{bar:<30}] {self.done}/{self.total} {what[:60]:<60}")
            if self.done == self.total:
                sys.stderr.write("\n")
        elif int(10 * frac) != self.last_decile:
            self.last_decile = int(10 * frac)
            sys.stderr.write(f"[{self.done}/{self.total}] {what}\n")
        sys.stderr.flush()


def run(mode: str = "quick", sizes: tuple[int, ...] = SIZES, rows: tuple[Row, ...] = ROWS, calls: tuple[CallRow, ...] = CALLS, *,
        pi_quant: bool = True, pi_quant_python_path: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The matrix (rows × sizes × peers) and the call rows at the sizes of
    _bench_calls.SIZES among ``sizes``, as a JSON-ready report."""
    notes: dict[str, str] = {}  # what a peer said or lacks, said once
    with quiet_peers(notes):
        report = _run(mode, sizes, rows, calls, notes, pi_quant, pi_quant_python_path, log)
    report["notes"] = notes
    return report


def _optional(module: str) -> Any:
    """The module, or None if it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _run(mode: str, sizes: tuple[int, ...], rows: tuple[Row, ...], calls: tuple[CallRow, ...], notes: dict[str, str],
         pi_quant: bool, pi_quant_python_path: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    ctx = piquant.Context.get()
    threads = ctx.num_threads
    torch = _optional("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    skipped_peers: dict[str, str] = {}
    if torch is None:
        skipped_peers["torch"] = skipped_peers["torch decomposed"] = skipped_peers["torchao"] = "torch is not installed"
    elif (why := import_torchao(notes)) is not None:
        skipped_peers["torchao"] = why
    if _optional("gguf") is None:
        skipped_peers["gguf"] = "gguf is not installed (pip install gguf)"
    if _optional("ggml") is None:
        skipped_peers["ggml"] = "ggml-python is not installed (see .ci/run: built without FMA contraction)"
    py = None
    if pi_quant:
        py, why = pi_quant_python(pi_quant_python_path, log)
        if why:
            skipped_peers["pi-quant"] = why
    else:
        skipped_peers["pi-quant"] = "--no-pi-quant"
    in_process = [p for p in ("torch", "torch decomposed", "torchao", "gguf", "ggml", "reference") if p not in skipped_peers]
    call_sizes = [n for n in sizes if n in _bench_calls.SIZES]
    matrix_sizes = sizes if rows else ()  # the roofline is the matrix's
    progress = Progress(len(matrix_sizes) * (2 + len(rows) * (1 + len(in_process))) + len(call_sizes) * len(calls))
    results: list[Result] = []
    roofline: dict[int, dict[str, float]] = {}
    lib = _backend.library()
    for n in matrix_sizes:
        roofline[n] = stream_bandwidth(lib, ctx, n, mode, progress)
        x32 = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
        for row in rows:
            if not row.fits(n) or (row.memory == "torch" and torch is None):
                progress.step(f"{row.name} n={n} (does not fit)")
                for _ in in_process:
                    progress.step(f"{row.name} n={n}")
                continue
            res = Result(row.name, n, row.bytes_moved(n))
            inp = Inputs(row, x32, torch)
            res.seconds["piquant"] = median_time(piquant_fn(inp, ctx), BUDGET[mode], MIN_REPEATS[mode])
            progress.step(f"{row.name} n={n} piquant")
            for peer in in_process:
                if peer == "reference" and n > REFERENCE_MAX[mode]:
                    res.skipped[peer] = f"n > {REFERENCE_MAX[mode]:,} (slow; --full runs it)"
                else:
                    make = {"torch": torch_fn, "torch decomposed": decomposed_fn, "torchao": torchao_fn, "gguf": gguf_fn, "ggml": ggml_fn,
                            "reference": reference_fn}[peer]
                    try:
                        fn, why = make(inp)
                        if fn is None:
                            res.skipped[peer] = why or "n/a"
                        else:
                            res.seconds[peer] = median_time(fn, BUDGET[mode], MIN_REPEATS[mode])
                    except Exception as e:  # a peer that cannot do this row is reported, not fatal
                        res.skipped[peer] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
                progress.step(f"{row.name} n={n} {peer}")
            bw = roofline[n]["read_bytes_per_s" if row.op == "compute_params" else "copy_bytes_per_s"]
            res.roofline_efficiency = res.bytes / res.seconds["piquant"] / bw
            results.append(res)
            del inp
    call_results = []
    for n in call_sizes:
        for c in calls:
            call_results.append(_bench_calls.measure(c, n, torch, BUDGET[mode], MIN_REPEATS[mode]))
            progress.step(f"{c.name} n={n}")
    if py:
        cases = [(row, n) for n in sizes for row in rows if row.fits(n) and (row.memory != "torch" or torch is not None)]
        try:
            medians, whys = run_pi_quant(py, cases, threads, mode)
            for res, t, w in zip(results, medians, whys):
                if t is None:
                    res.skipped["pi-quant"] = w or "n/a"
                else:
                    res.seconds["pi-quant"] = t
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            skipped_peers["pi-quant"] = f"its run failed: {getattr(e, 'stderr', '') or e}"
    for res in results:
        for peer, why in skipped_peers.items():
            res.skipped.setdefault(peer, why)
    info = piquant.info(ctx)
    return {
        "piquant": info,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": getattr(torch, "__version__", None)},
        "mode": mode,
        "threads": threads,
        "skipped_peers": skipped_peers,
        "roofline": {str(n): v for n, v in roofline.items()},
        "results": [asdict(r) for r in results],
        "calls": call_results,
    }


def stream_bandwidth(lib: Any, ctx: piquant.Context, n: int, mode: str, progress: Progress) -> dict[str, float]:
    """Copy and read bandwidth (bytes/s, read + written) on n float32 values."""
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    handle = ctx.backend._ctx
    copy = median_time(lambda: lib.piquant_stream(handle, src.ctypes.data, dst.ctypes.data, src.nbytes), BUDGET[mode], MIN_REPEATS[mode])
    progress.step(f"copy n={n}")
    read = median_time(lambda: lib.piquant_stream(handle, src.ctypes.data, None, src.nbytes), BUDGET[mode], MIN_REPEATS[mode])
    progress.step(f"read n={n}")
    return {"copy_bytes_per_s": 2 * src.nbytes / copy, "read_bytes_per_s": src.nbytes / read}


# ------------------------------------------------------------ reporting


def _time(t: float) -> str:
    return f"{t * 1e6:8.2f} µs" if t < 1e-3 else f"{t * 1e3:8.2f} ms"


def table(report: dict[str, Any]) -> str:
    peers = [p for p in PEERS if any(p in r["seconds"] for r in report["results"])]
    head = f"{'row':34} {'n':>11} {'piquant':>12} " + " ".join(f"{'÷ ' + p:>18}" for p in peers) + f" {'roofline':>9}"
    lines = [head, "-" * len(head)] if report["results"] else []
    for r in report["results"]:
        t = r["seconds"]["piquant"]
        cells = [f"{t_p / t:17.2f}x" if (t_p := r["seconds"].get(p)) else f"{'—':>18}" for p in peers]
        eff = r["roofline_efficiency"]
        lines.append(f"{r['row']:34} {r['n']:>11,} {_time(t):>12} " + " ".join(cells) + f" {eff:9.2f}")
    if report["results"]:
        lines.append("÷ peer: the peer's median time over piquant's (above 1: piquant is faster). "
                     "roofline: (bytes read + written) / time ÷ copy bandwidth of the same run (read bandwidth for compute_params).")
    for peer, why in report["skipped_peers"].items():
        lines.append(f"skipped {peer}: {why}")
    by_peer: dict[str, list[str]] = {}
    for r in report["results"]:
        for p, w in r["skipped"].items():
            if p not in report["skipped_peers"] and w not in by_peer.setdefault(p, []):
                by_peer[p].append(w)
    for p, whys in by_peer.items():
        lines.append(f"{p} not on some rows: " + "; ".join(w.removeprefix(p + ": ") for w in whys))
    for peer, note in report.get("notes", {}).items():
        lines.append(f"note on {peer}: {note}")
    if report.get("calls"):
        lines.append(_bench_calls.table(report["calls"]))
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> str | None:
    """A PNG of piquant's speed-up over each peer, one panel per size, and
    one of the call rows beside it (``<path stem>_calls.png``); None, or the
    reason they were not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib, or piquant[bench])"
    if report["results"]:
        _matrix_chart(plt, report, path)
    if report.get("calls"):
        _calls_chart(plt, report["calls"], path.with_name(path.stem + "_calls.png"))
    return None


def _matrix_chart(plt: Any, report: dict[str, Any], path: Path) -> None:
    sizes = sorted({r["n"] for r in report["results"]})
    rows = list(dict.fromkeys(r["row"] for r in report["results"]))
    peers = [p for p in PEERS if any(p in r["seconds"] for r in report["results"])]
    fig, axes = plt.subplots(len(sizes), 1, figsize=(max(12, 0.6 * len(rows)), 2.6 * len(sizes) + 2.2), sharex=True, squeeze=False)
    width = 0.8 / max(1, len(peers))
    for ax, n in zip(axes[:, 0], sizes):
        by_row = {r["row"]: r for r in report["results"] if r["n"] == n}
        for k, peer in enumerate(peers):
            ys = [by_row[row]["seconds"].get(peer, np.nan) / by_row[row]["seconds"]["piquant"] if row in by_row else np.nan for row in rows]
            ax.bar(np.arange(len(rows)) + k * width, ys, width, label=peer, color=f"C{k}")
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"n = {n:,}", fontsize=10)
        ax.grid(axis="y", which="major", alpha=0.3)
    axes[0, 0].set_title("peer time ÷ piquant time, per size (above 1: piquant is faster)", fontsize=11)
    last = axes[-1, 0]
    last.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
    last.set_xticklabels(rows, rotation=40, ha="right", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(peers), fontsize=10, frameon=False)  # below the labels, over no bar
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _calls_chart(plt: Any, calls: list[dict[str, Any]], path: Path) -> None:
    names = list(dict.fromkeys(c["call"] for c in calls))
    sizes = sorted({c["n"] for c in calls})
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(names) + 1.5))
    height = 0.8 / len(sizes)
    for k, n in enumerate(sizes):
        by_name = {c["call"]: c for c in calls if c["n"] == n}
        xs = [c["seconds"]["piquant"] / c["seconds"]["beside"] if (c := by_name.get(name)) and c["seconds"] else np.nan for name in names]
        ax.barh(np.arange(len(names)) + k * height, xs, height, label=f"n = {n:,}", color=f"C{k}")
    goals = [next((c["goal"] for c in calls if c["call"] == name), None) for name in names]
    ys = [i + 0.4 - height / 2 for i, g in enumerate(goals) if g is not None]
    ax.scatter([g for g in goals if g is not None], ys, marker="|", s=300, color="red", label="goal (issue 14)", zorder=3)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(np.arange(len(names)) + 0.4 - height / 2)
    ax.set_yticklabels(names, fontsize=9)
    ax.invert_yaxis()
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.set_title("call rows: piquant's time ÷ its equivalent's (below 1: piquant is faster)", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False)  # beside the axes, over no bar
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: Any) -> int:
    mode = "full" if args.full else "quick"
    sizes = tuple(args.sizes) if args.sizes else SIZES
    rows = tuple(r for r in ROWS if not args.rows or any(k in r.name for k in args.rows))
    calls = tuple(c for c in CALLS if not args.rows or any(k in c.name or k == "calls" for k in args.rows))
    report = run(mode, sizes, rows, calls, pi_quant=not args.no_pi_quant, pi_quant_python_path=args.pi_quant_python,
                 log=lambda m: print(m, file=sys.stderr))
    print(table(report))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    print(f"results: {out / 'bench.json'}")
    for png in ("bench.png", "bench_calls.png"):
        (out / png).unlink(missing_ok=True)  # of an earlier run
    why = chart(report, out / "bench.png")
    if why is not None:
        print(f"chart skipped: {why}")
    for png in ("bench.png", "bench_calls.png"):
        if (out / png).exists():
            print(f"chart: {out / png}")
    return 0
