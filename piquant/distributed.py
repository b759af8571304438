"""Quantized all-reduce on torch.distributed.

``all_reduce`` is a ring all-reduce over point-to-point send/recv (any
backend that has them; gloo on CPU is the tested one):

1. reduce-scatter: in W-1 steps, each rank quantizes its running partial sum
   of one chunk (with that chunk's own scale and zero point, computed by
   piquant), sends it to the next rank, and folds the chunk it receives from
   the previous rank into its accumulator with ``dequantize(reduce="add")`` —
   no float copy of a received chunk is made;
2. all-gather: each rank quantizes the chunk it finished once, and the
   quantized bytes travel around the ring unchanged; every rank (the owner
   too) dequantizes the same bytes, so every rank ends with identical values.

A message is one uint8 tensor: 24 bytes of header (float64 scale, int64
zero point, flags) followed by the quantized data.

Non-finite values (NaN, ±inf) cannot be quantized. A rank zeroes them in its
accumulator before quantizing a chunk (the min/max pass that gives the
chunk's parameters finds them at no extra cost) and sets a flag in every
message it sends from then on; each rank forwards the flags it received.
A rank's flag is complete when it quantizes its finished chunk at the start
of the all-gather, and the W-1 all-gather steps carry it to every other
rank, so all ranks agree whether any rank saw one. If so, they run one
float32 ``torch.distributed.all_reduce`` of the non-finite values (finite
ones as 0) and take its result wherever it is not finite: NaN where any rank
had NaN or where +inf met -inf, ±inf where only that infinity occurred —
torch's own all-reduce semantics, identical on every rank.

With ``error_feedback``, every quantization error a rank makes (a partial
sum it sends, or the chunk it finished) is added to a residual kept per
tensor at that chunk's positions, and the residual is added to the tensor's
contribution on the next call: the errors of one call are paid back in the
next, as compressed-gradient training expects.
"""

from __future__ import annotations

import datetime
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from . import _api, _arrays
from ._dtypes import DataType, resolve

_PARAMS = struct.Struct("<dqQ")  # scale, zero point (uint64's as their int64 bits), flags
_HEADER = _PARAMS.size
_NONFINITE = 1  # flag: the sender or a rank before it zeroed a NaN or ±inf


@dataclass
class ErrorFeedback:
    """Residuals of quantization, one per tensor (keyed by ``key``, default
    the tensor's identity), carried from one ``all_reduce`` call to the next."""

    residuals: dict[Any, torch.Tensor] = field(default_factory=dict)

    def residual(self, key: Any, like: torch.Tensor) -> torch.Tensor:
        r = self.residuals.get(key)
        if r is None or r.numel() != like.numel():  # kept flat: any shape
            r = self.residuals[key] = torch.zeros(like.numel(), dtype=torch.float32)
        return r


def _bounds(n: int, world: int) -> list[tuple[int, int]]:
    """Chunk c of the ring: [begin, end), sizes differing by at most one."""
    base, extra = divmod(n, world)
    out, begin = [], 0
    for c in range(world):
        end = begin + base + (c < extra)
        out.append((begin, end))
        begin = end
    return out


def _data(buf: torch.Tensor, qdt: DataType) -> torch.Tensor:
    """The quantized part of a message, as the type's storage dtype."""
    return buf[_HEADER:].view(_arrays.torch_storage(qdt))


def _finite_params(chunk: torch.Tensor, qdt: DataType) -> tuple[Any, bool]:
    """The chunk's parameters, after zeroing its non-finite values in place;
    and whether there were any. One NaN-propagating min/max pass: the
    parameters depend on nothing else."""
    if not chunk.numel():
        return _api.compute_params(chunk, qdt), False
    lo_hi = torch.stack(torch.aminmax(chunk))
    if bool(torch.isfinite(lo_hi).all()):
        return _api.compute_params(lo_hi, qdt), False
    torch.nan_to_num_(chunk, nan=0.0, posinf=0.0, neginf=0.0)
    return _api.compute_params(torch.stack(torch.aminmax(chunk)), qdt), True


def _encode(chunk: torch.Tensor, qdt: DataType, rounding: str, buf: torch.Tensor, residual: torch.Tensor | None, flags: int) -> int:
    """Quantize ``chunk`` (float32, contiguous) into ``buf`` (header + data);
    with a residual, add this quantization's error to it. Returns ``flags``
    with _NONFINITE set if the chunk held a NaN or ±inf (now zeroed)."""
    seed = secrets.randbits(64)
    p, nonfinite = _finite_params(chunk, qdt)
    flags |= _NONFINITE if nonfinite else 0
    buf[:_HEADER].numpy()[:] = np.frombuffer(_PARAMS.pack(p.scale, qdt.raw_zero_point(p.zero_point), flags), np.uint8)
    _api.quantize(chunk, qdt, scale=p.scale, zero_point=p.zero_point, round_mode=rounding, seed=seed, out=_data(buf, qdt))
    if residual is not None:
        # error = chunk - dequantize(quantize(chunk)), with the same seed: exactly what was lost.
        residual.add_(chunk)
        lost = _api.fake_quantize(chunk, qdt, scale=p.scale, zero_point=p.zero_point, round_mode=rounding, seed=seed)
        residual.sub_(lost)
    return flags


def _decode_into(buf: torch.Tensor, qdt: DataType, out: torch.Tensor, reduce: str) -> int:
    """Dequantize a message straight into ``out`` (set, or add for the ring's
    folds); returns the message's flags."""
    scale, raw, flags = _PARAMS.unpack(buf[:_HEADER].numpy().tobytes())
    zero_point = qdt.zero_point_from_raw(raw)
    shape = (out.numel(),) if qdt.is_packed else None
    _api.dequantize(_data(buf, qdt), scale=scale, zero_point=zero_point, qdtype=qdt, shape=shape, reduce=reduce, out=out)
    return flags


def _set_flags(buf: torch.Tensor, flags: int) -> None:
    buf[16:_HEADER].numpy()[:] = np.frombuffer(struct.pack("<Q", flags), np.uint8)


def _nonfinite_all_reduce(tensor: torch.Tensor, acc: torch.Tensor, group: Any, timeout: datetime.timedelta) -> None:
    """Where the float32 sum of every rank's non-finite values (finite ones
    as 0) is not finite, it is the result: torch's semantics for NaN and ±inf."""
    t = tensor.reshape(-1).to(torch.float32)
    special = torch.where(torch.isfinite(t), 0.0, t)
    try:
        dist.all_reduce(special, group=group, async_op=True).wait(timeout)
    except RuntimeError as e:
        raise RuntimeError(f"piquant.distributed.all_reduce: the all-reduce of non-finite values failed or timed out "
                           f"after {timeout.total_seconds():g} s (a peer exited or hangs?): {e}") from e
    hit = ~torch.isfinite(special)
    acc[hit] = special[hit]
    acc[torch.isnan(acc)] = float("nan")  # one NaN bit pattern on every rank


def _exchange(send: torch.Tensor, recv: torch.Tensor, to: int, frm: int, group: Any, timeout: datetime.timedelta) -> None:
    """Send to the next rank while receiving from the previous one."""
    try:
        reqs = [dist.isend(send, group_dst=to, group=group), dist.irecv(recv, group_src=frm, group=group)]
        for r in reqs:
            r.wait(timeout)
    except RuntimeError as e:
        raise RuntimeError(f"piquant.distributed.all_reduce: exchange with ranks {frm} → me → {to} failed or timed out "
                           f"after {timeout.total_seconds():g} s (a peer exited or hangs?): {e}") from e


def all_reduce(
    tensor: torch.Tensor,
    group: Any = None,
    *,
    dtype: Any = "uint8",
    op: str = "sum",
    rounding: str = "stochastic",
    error_feedback: ErrorFeedback | None = None,
    key: Any = None,
    timeout: float = 120.0,
) -> torch.Tensor:
    """All-reduce ``tensor`` in place over ``group``, sending it quantized to
    ``dtype`` (uint8 by default; any piquant quantized type). ``op`` is "sum"
    or "avg"; ``rounding`` "stochastic" (unbiased) or "nearest". float32 and
    bfloat16 tensors; partial sums are kept in float32. Returns ``tensor``,
    identical on every rank. A peer that exits or stops answering makes the
    call raise RuntimeError within ``timeout`` seconds."""
    if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
        raise TypeError("tensor: expected a CPU torch tensor")
    if tensor.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"tensor: expected float32 or bfloat16, got {tensor.dtype}")
    if op not in ("sum", "avg"):
        raise ValueError(f"op: expected 'sum' or 'avg', got {op!r}")
    if rounding not in ("stochastic", "nearest"):
        raise ValueError(f"rounding: expected 'stochastic' or 'nearest', got {rounding!r}")
    if not tensor.is_contiguous():
        raise ValueError("tensor: expected a contiguous tensor (it is reduced in place)")
    qdt = resolve(dtype, "dtype", quantized=True)
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    wait = datetime.timedelta(seconds=timeout)

    acc = tensor.reshape(-1).to(torch.float32, copy=True)
    residual = None
    if error_feedback is not None:
        residual = error_feedback.residual(id(tensor) if key is None else key, tensor)
        acc.add_(residual)
        residual.zero_()
    n = acc.numel()
    flags = 0
    if world > 1 and n:
        chunks = _bounds(n, world)
        width = max(e - b for b, e in chunks)
        send_buf = torch.empty(_HEADER + qdt.nbytes(width), dtype=torch.uint8)
        recv_buf = torch.empty_like(send_buf)
        nxt, prv = (rank + 1) % world, (rank - 1) % world

        def span(c: int) -> tuple[int, int]:
            return chunks[c % world]

        def msg(buf: torch.Tensor, c: int) -> torch.Tensor:
            b, e = span(c)
            return buf[: _HEADER + qdt.nbytes(e - b)]

        # Reduce-scatter: after step s, chunk (rank - s - 1) holds s + 2 contributions.
        for s in range(world - 1):
            c_send, c_recv = rank - s, rank - s - 1
            b, e = span(c_send)
            flags = _encode(acc[b:e], qdt, rounding, msg(send_buf, c_send), None if residual is None else residual[b:e], flags)
            _exchange(msg(send_buf, c_send), msg(recv_buf, c_recv), nxt, prv, group, wait)
            b, e = span(c_recv)
            flags |= _decode_into(msg(recv_buf, c_recv), qdt, acc[b:e], "add")
        # All-gather: this rank owns chunk rank + 1; its bytes go around unchanged.
        own = rank + 1
        b, e = span(own)
        flags = _encode(acc[b:e], qdt, rounding, msg(send_buf, own), None if residual is None else residual[b:e], flags)
        _decode_into(msg(send_buf, own), qdt, acc[b:e], "set")
        for s in range(world - 1):
            c_send, c_recv = own - s, own - s - 1
            _set_flags(msg(send_buf, c_send), flags)
            _exchange(msg(send_buf, c_send), msg(recv_buf, c_recv), nxt, prv, group, wait)
            b, e = span(c_recv)
            flags |= _decode_into(msg(recv_buf, c_recv), qdt, acc[b:e], "set")
            send_buf, recv_buf = recv_buf, send_buf  # forward what was received
        if flags & _NONFINITE:
            _nonfinite_all_reduce(tensor, acc, group, wait)
    if op == "avg":
        acc.div_(world)
    tensor.copy_(acc.reshape(tensor.shape))
    return tensor
