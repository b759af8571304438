"""Call rows of ``python -m piquant bench``: the public call forms a user
types (issue 14), each beside torch's equivalent, at sizes where the call
itself dominates. Only the public API is used, so the rows measure whatever
the call path is. The ratio is piquant's median over the equivalent's, and
the goal the bound issue 14 sets on it (below 1: piquant is faster).

Group-wise and GGUF calls are measured beside the per-tensor call of the
same data, which is what their goal compares with.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import piquant

SIZES = (64, 4_096)
STALLED = 1e-3  # seconds: far beyond any equivalent's time at these sizes on an idle machine

Fn = Callable[[], Any]


class CallInputs:
    """One float32 vector as a numpy array ``x`` and a torch tensor ``t`` (the
    same memory), its uint8 parameters, and the torch module or None."""

    def __init__(self, x: np.ndarray, torch: Any) -> None:
        self.x, self.n, self.torch = x, x.size, torch
        self.t: Any = None if torch is None else torch.from_numpy(x)
        self.s, self.zp = piquant.compute_params(x, "uint8")


@dataclass(frozen=True)
class CallRow:
    name: str  # the call as a user types it
    beside: str  # torch's equivalent, or the per-tensor call for group-wise and GGUF
    goal: float | None  # issue 14's bound on piquant's time ÷ the equivalent's
    make: Callable[[CallInputs], tuple[Fn, Fn]]
    needs_torch: bool = True  # piquant's call itself takes torch tensors


def _torch_quantize(c: CallInputs, qtype: str = "quint8", zp: int | None = None) -> Fn:
    torch, t, s = c.torch, c.t, c.s
    z, dt = c.zp if zp is None else zp, getattr(torch, qtype)
    return lambda: torch.quantize_per_tensor(t, s, z, dt)


def _decomposed() -> Any:
    import torch
    from torch.ao.quantization.fx import _decomposed  # noqa: F401  registers the ops

    return torch.ops.quantized_decomposed


def _quantize_t(c: CallInputs) -> tuple[Fn, Fn]:
    t, s, zp = c.t, c.s, c.zp
    return (lambda: piquant.quantize(t, "uint8", scale=s, zero_point=zp)), _torch_quantize(c)


def _quantize_t_out(c: CallInputs) -> tuple[Fn, Fn]:
    t, s, zp, o = c.t, c.s, c.zp, c.torch.empty(c.n, dtype=c.torch.uint8)
    return (lambda: piquant.quantize(t, "uint8", scale=s, zero_point=zp, out=o)), _torch_quantize(c)


def _quantize_x(c: CallInputs) -> tuple[Fn, Fn]:
    x, s, zp = c.x, c.s, c.zp
    return (lambda: piquant.quantize(x, "uint8", scale=s, zero_point=zp)), _torch_quantize(c)


def _quantize_x_out(c: CallInputs) -> tuple[Fn, Fn]:
    x, s, zp, o = c.x, c.s, c.zp, np.empty(c.n, np.uint8)
    return (lambda: piquant.quantize(x, "uint8", scale=s, zero_point=zp, out=o)), _torch_quantize(c)


def _quantize_computed(c: CallInputs) -> tuple[Fn, Fn]:
    t = c.t
    return (lambda: piquant.quantize(t, "uint8")), _torch_quantize(c)


def _dequantize_q(c: CallInputs) -> tuple[Fn, Fn]:
    q = piquant.quantize(c.t, "uint8", scale=c.s, zero_point=c.zp)
    tq = _torch_quantize(c)()
    return (lambda: piquant.dequantize(q)), tq.dequantize


def _dequantize_q_numpy(c: CallInputs) -> tuple[Fn, Fn]:
    q = piquant.quantize(c.x, "uint8", scale=c.s, zero_point=c.zp)
    tq = _torch_quantize(c)()
    return (lambda: piquant.dequantize(q)), tq.dequantize


def _dequantize_q_out(reduce: str) -> Callable[[CallInputs], tuple[Fn, Fn]]:
    """Into a float32 tensor the caller holds, as a layer's weights or a
    gradient accumulator are: torch's equivalent dequantizes to a new tensor
    and copies or adds it."""

    def make(c: CallInputs) -> tuple[Fn, Fn]:
        torch = c.torch
        q = piquant.quantize(c.t, "uint8", scale=c.s, zero_point=c.zp)
        tq, o = _torch_quantize(c)(), torch.zeros(c.n, dtype=torch.float32)
        if reduce == "add":
            return (lambda: piquant.dequantize(q, out=o, reduce="add")), (lambda: o.add_(tq.dequantize()))
        return (lambda: piquant.dequantize(q, out=o)), (lambda: o.copy_(tq.dequantize()))

    return make


def _dequantize_tq(c: CallInputs) -> tuple[Fn, Fn]:
    tq = _torch_quantize(c)()
    return (lambda: piquant.dequantize(tq)), tq.dequantize


def _per_channel(c: CallInputs) -> tuple[Fn, Fn]:
    """64 channels of n/64 elements along axis 0, each with its own parameters."""
    torch, t2 = c.torch, c.t.reshape(64, -1)
    s, zp = piquant.compute_params(t2, "uint8", axis=0)
    s64, zp64 = s.double(), zp
    return (lambda: piquant.quantize(t2, "uint8", scale=s, zero_point=zp, axis=0)), (
        lambda: torch.quantize_per_channel(t2, s64, zp64, 0, torch.quint8))


def _pi_quant_quantize(qtype: str) -> Callable[[CallInputs], tuple[Fn, Fn]]:
    def make(c: CallInputs) -> tuple[Fn, Fn]:
        import piquant.torch as pt

        torch, t, s = c.torch, c.t, c.s
        zp = c.zp if qtype != "quint4x2" else 8
        dt = getattr(torch, qtype)
        ours = lambda: pt.quantize(t, scale=s, zero_point=zp, dtype=dt)  # noqa: E731
        if qtype == "uint8":
            ops = _decomposed()
            return ours, lambda: ops.quantize_per_tensor(t, s, zp, 0, 255, torch.uint8)
        return ours, _torch_quantize(c, qtype, zp)

    return make


def _pi_quant_dequantize(qtype: str) -> Callable[[CallInputs], tuple[Fn, Fn]]:
    def make(c: CallInputs) -> tuple[Fn, Fn]:
        import piquant.torch as pt

        torch, s = c.torch, c.s
        zp = c.zp if qtype != "quint4x2" else 8
        f32 = torch.float32
        if qtype == "uint8":
            ops = _decomposed()
            q8 = ops.quantize_per_tensor(c.t, s, zp, 0, 255, torch.uint8)
            return (lambda: pt.dequantize(q8, scale=s, zero_point=zp, dtype=f32)), lambda: ops.dequantize_per_tensor(q8, s, zp, 0, 255, torch.uint8)
        tq = _torch_quantize(c, qtype, zp)()
        return (lambda: pt.dequantize(tq, scale=s, zero_point=zp, dtype=f32)), tq.dequantize

    return make


def _context_ptr(op: str) -> Callable[[CallInputs], tuple[Fn, Fn]]:
    """pi-quant's Context API on addresses taken once, as its users hold them."""

    def make(c: CallInputs) -> tuple[Fn, Fn]:
        ctx, dt, n, s, zp = piquant.Context.get(), piquant.DataType, c.n, c.s, c.zp
        arrays = (c.x, np.empty(n, np.uint8), np.empty(n, np.float32))
        px, pq, pf = (a.ctypes.data for a in arrays)
        mode, reduce = piquant.RoundMode.NEAREST, piquant.ReduceOp.SET

        # The default argument keeps alive the memory the addresses point into.
        def quantize(_hold: Any = arrays) -> None:
            ctx.quantize_ptr(px, dt.F32, pq, dt.UINT8, n, s, zp, mode)

        def dequantize(_hold: Any = arrays) -> None:
            ctx.dequantize_ptr(pq, dt.UINT8, pf, dt.F32, n, s, zp, reduce)

        def params(_hold: Any = arrays) -> None:
            ctx.compute_quant_params_ptr_float32(px, dt.UINT8, n)

        if op == "quantize":
            return quantize, _torch_quantize(c)
        if op == "params":
            return params, torch_params(c.torch, c.t, 0, 255)
        return dequantize, _torch_quantize(c)().dequantize

    return make


def _fake_quantize(out: bool) -> Callable[[CallInputs], tuple[Fn, Fn]]:
    def make(c: CallInputs) -> tuple[Fn, Fn]:
        torch, t, s, zp = c.torch, c.t, c.s, c.zp
        theirs = lambda: torch.fake_quantize_per_tensor_affine(t, s, zp, 0, 255)  # noqa: E731
        if out:
            o = torch.empty_like(t)
            return (lambda: piquant.fake_quantize(t, "uint8", scale=s, zero_point=zp, out=o)), theirs
        return (lambda: piquant.fake_quantize(t, "uint8", scale=s, zero_point=zp)), theirs

    return make


def torch_params(torch: Any, xt: Any, qmin: int, qmax: int) -> Fn:
    """MinMaxObserver's affine parameters in plain torch ops, as Python numbers
    like piquant's (quantized_decomposed.choose_qparams.tensor is ~15x slower)."""
    eps = torch.finfo(torch.float32).eps

    def params() -> tuple[float, int]:
        mn, mx = torch.aminmax(xt)
        lo, hi = torch.clamp(mn, max=0), torch.clamp(mx, min=0)
        scale = torch.clamp((hi - lo) / float(qmax - qmin), min=eps)
        zero = torch.clamp(qmin - torch.round(lo / scale).to(torch.int), qmin, qmax)
        return scale.item(), int(zero.item())

    return params


def _compute_params(c: CallInputs) -> tuple[Fn, Fn]:
    t = c.t
    return (lambda: piquant.compute_params(t, "uint8")), torch_params(c.torch, t, 0, 255)


def _per_tensor(c: CallInputs, qtype: str) -> Fn:
    x = c.x
    s, zp = piquant.compute_params(x, qtype, symmetric=True)
    return lambda: piquant.quantize(x, qtype, scale=s, zero_point=zp)


def _group_wise(c: CallInputs) -> tuple[Fn, Fn]:
    x = c.x
    s, zp = piquant.compute_params(x, "int4", symmetric=True, group_size=32)
    return (lambda: piquant.quantize(x, "int4", scale=s, zero_point=zp, group_size=32)), _per_tensor(c, "int4")


def _gguf_q8_0(c: CallInputs) -> tuple[Fn, Fn]:
    x = c.x
    return (lambda: piquant.gguf.quantize(x, "Q8_0")), _per_tensor(c, "int8")


_QPT = "torch.quantize_per_tensor(t, s, zp, quint8)"
_DEQ = "tq.dequantize()"
CALLS = (
    CallRow('quantize(t, "uint8", scale=s, zero_point=zp)', _QPT, 1.0, _quantize_t),
    CallRow('quantize(t, "uint8", scale=s, zero_point=zp, out=o)', _QPT, 0.6, _quantize_t_out),
    CallRow('quantize(x, "uint8", scale=s, zero_point=zp)  [numpy]', _QPT, 1.25, _quantize_x, needs_torch=False),
    CallRow('quantize(x, "uint8", scale=s, zero_point=zp, out=o)  [numpy]', _QPT, 0.8, _quantize_x_out, needs_torch=False),
    CallRow('quantize(t, "uint8")  [parameters computed]', _QPT, 1.5, _quantize_computed),
    CallRow("dequantize(q)  [Quantized of a tensor]", _DEQ, 1.0, _dequantize_q),
    CallRow("dequantize(q, out=o)  [Quantized of a tensor]", "o.copy_(tq.dequantize())", None, _dequantize_q_out("set")),
    CallRow('dequantize(q, out=o, reduce="add")  [Quantized of a tensor]', "o.add_(tq.dequantize())", None, _dequantize_q_out("add")),
    CallRow("dequantize(q)  [Quantized of a numpy array]", _DEQ, None, _dequantize_q_numpy, needs_torch=False),
    CallRow("dequantize(tq)  [torch quantized tensor]", _DEQ, None, _dequantize_tq),
    CallRow("piquant.torch.quantize(t, ..., dtype=torch.quint8)", _QPT, 1.0, _pi_quant_quantize("quint8")),
    CallRow("piquant.torch.quantize(t, ..., dtype=torch.uint8)", "quantized_decomposed.quantize_per_tensor", 1.0, _pi_quant_quantize("uint8")),
    CallRow("piquant.torch.quantize(t, ..., dtype=torch.quint4x2)", "torch.quantize_per_tensor(..., quint4x2)", 1.0, _pi_quant_quantize("quint4x2")),
    CallRow("piquant.torch.dequantize(tq quint8, ..., dtype=torch.float32)", _DEQ, 1.0, _pi_quant_dequantize("quint8")),
    CallRow("piquant.torch.dequantize(q uint8, ..., dtype=torch.float32)", "quantized_decomposed.dequantize_per_tensor", 1.0, _pi_quant_dequantize("uint8")),
    CallRow("piquant.torch.dequantize(tq quint4x2, ..., dtype=torch.float32)", _DEQ, 1.0, _pi_quant_dequantize("quint4x2")),
    CallRow("ctx.quantize_ptr(px, F32, pq, UINT8, n, s, zp, NEAREST)", _QPT, None, _context_ptr("quantize"), needs_torch=False),
    CallRow("ctx.dequantize_ptr(pq, UINT8, pf, F32, n, s, zp, SET)", _DEQ, None, _context_ptr("dequantize"), needs_torch=False),
    CallRow("ctx.compute_quant_params_ptr_float32(px, UINT8, n)", "torch.aminmax + MinMaxObserver's arithmetic", None, _context_ptr("params"),
            needs_torch=False),
    CallRow('fake_quantize(t, "uint8", scale=s, zero_point=zp)', "torch.fake_quantize_per_tensor_affine", None, _fake_quantize(False)),
    CallRow('fake_quantize(t, "uint8", scale=s, zero_point=zp, out=o)', "torch.fake_quantize_per_tensor_affine", None, _fake_quantize(True)),
    CallRow('compute_params(t, "uint8")', "torch.aminmax + MinMaxObserver's arithmetic", None, _compute_params),
    CallRow('quantize(t2, "uint8", scale=S, zero_point=Z, axis=0)', "torch.quantize_per_channel(t2, S, Z, 0, quint8)", None,
            _per_channel),
    CallRow('quantize(x, "int4", scale=S, zero_point=Z, group_size=32)', 'per tensor: quantize(x, "int4", scale=s, ...)', 1.5, _group_wise,
            needs_torch=False),
    CallRow('piquant.gguf.quantize(x, "Q8_0")', 'per tensor: quantize(x, "int8", scale=s, ...)', 1.5, _gguf_q8_0, needs_torch=False),
)


def paired_medians(a: Fn, b: Fn, budget: float, min_repeats: int, rounds: int = 5) -> tuple[float, float]:
    """Median seconds of a and of b, timed in alternating rounds so that both
    see the same load of a shared machine."""
    a(), b()  # warm up
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(rounds):
        for fn, times in ((a, ta), (b, tb)):
            end = time.perf_counter() + budget / (2 * rounds)
            k = 0
            while k < -(-min_repeats // rounds) or (time.perf_counter() < end and k < 400):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
                k += 1
    return statistics.median(ta), statistics.median(tb)


def measure(row: CallRow, n: int, torch: Any, budget: float, min_repeats: int) -> dict[str, Any]:
    """One call row at n elements: {"call", "n", "beside", "goal", "seconds": {"piquant", "beside"}, "skipped"}."""
    res: dict[str, Any] = {"call": row.name, "n": n, "beside": row.beside, "goal": row.goal, "seconds": {}, "skipped": None}
    beside_torch = not row.beside.startswith("per tensor")
    if torch is None and (row.needs_torch or beside_torch):
        res["skipped"] = "torch is not installed"
        return res
    try:
        c = CallInputs(np.random.default_rng(0).standard_normal(n, dtype=np.float32), torch)
        ours, theirs = row.make(c)
        res["seconds"]["piquant"], res["seconds"]["beside"] = paired_medians(ours, theirs, budget, min_repeats)
    except Exception as e:  # shown in the table: a call form that fails is a finding, not a crash of the bench
        res["seconds"], res["skipped"] = {}, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
    return res


def table(calls: list[dict[str, Any]]) -> str:
    head = f"{'call':64} {'n':>6} {'piquant':>11}  {'beside':44} {'its time':>11} {'piquant ÷':>9} {'goal':>6}"
    lines = ["", "call rows: the public call forms beside torch's equivalent (issue 14)", head, "-" * len(head)]
    for r in calls:
        if r["skipped"]:
            lines.append(f"{r['call']:64} {r['n']:>6,}  skipped: {r['skipped']}")
            continue
        t, b = r["seconds"]["piquant"], r["seconds"]["beside"]
        goal = f"≤ {r['goal']:.2f}" if r["goal"] is not None else ""
        lines.append(f"{r['call']:64} {r['n']:>6,} {t * 1e6:8.2f} µs  {r['beside']:44} {b * 1e6:8.2f} µs {t / b:9.2f} {goal:>6}")
    lines.append("piquant ÷: piquant's median over its equivalent's, timed in alternating rounds (below 1: piquant is faster); goal: issue 14's bound.")
    if any(r["seconds"].get("beside", 0) > STALLED for r in calls):
        lines.append(f"an equivalent took over {STALLED * 1e3:g} ms: torch's ops that enter an OpenMP region wait for its second thread "
                     "while other processes hold the CPUs (a busy machine); rerun when it is quiet")
    return "\n".join(lines)
