"""Quantized all-reduce on torch.distributed, and a DDP communication hook.

``all_reduce`` is a ring all-reduce over point-to-point isend/irecv (any
backend that has them; gloo on CPU is the tested one). The tensors (one, or
a list reduced as one flat bucket) are cut into W chunks, one per rank, and
every chunk into the same number of pieces; a piece is one message:

1. reduce-scatter: in W-1 steps, each rank quantizes its running partial sum
   of a piece (with that piece's own parameters, which travel in the
   message), sends it to the next rank, and folds the piece it receives from
   the previous rank into its float32 accumulator with
   ``dequantize(reduce="add")`` — no float copy of a received piece is made;
2. all-gather: each rank quantizes the pieces of the chunk it finished once,
   and the quantized bytes travel around the ring unchanged; every rank (the
   owner too) dequantizes the same bytes, so every rank ends with identical
   values.

The ring is pipelined: every receive is posted up front, and a rank sends
piece k of a step as soon as it has folded piece k of the previous step, so
quantizing one piece, the transfer of the one before and the fold of the one
received overlap (the native calls release the GIL; gloo moves the bytes on
its own threads).

A message is one uint8 tensor: a header, then the quantized data. The header
is 8 bytes of flags, then the parameters: per piece a float64 scale and an
int64 zero point, or, with ``group_size=g``, one float32 scale and one int32
zero point per run of g elements (padded to 8 bytes).

Non-finite values (NaN, ±inf) cannot be quantized. A rank records and zeroes
them in a piece before quantizing it (the NaN-propagating min/max pass that
gives the piece's parameters finds them at no extra cost) and sets a flag in
every message it sends from then on; each rank forwards the flags it
received. A rank's flag is complete when it quantizes its finished chunk at
the start of the all-gather, and the W-1 all-gather steps carry it to every
other rank, so all ranks agree whether any rank saw one. If so, they run one
float32 ``torch.distributed.all_reduce`` of the recorded values (0
elsewhere) and take its result wherever it is not finite: NaN where any rank
had NaN or where +inf met -inf, ±inf where only that infinity occurred —
torch's own all-reduce semantics, identical on every rank.

With ``error_feedback``, every quantization error a rank makes (a partial
sum it sends, or the chunk it finished) is added to a residual kept per
``key`` at those positions, and the residual is added to the contribution
on the next call: the errors of one call are paid back in the next, as
compressed-gradient training expects.
"""

from __future__ import annotations

import datetime
import math
import secrets
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from . import _api, _arrays
from ._dtypes import DataType, resolve

_FLAGS = struct.Struct("<Q")
_PARAMS = struct.Struct("<Qdq")  # flags, scale, zero point (uint64's as their int64 bits)
_NONFINITE = 1  # flag: the sender or a rank before it zeroed a NaN or ±inf
# Quantized bytes per message. Each message costs ~0.1-0.2 ms of a rank's CPU
# (Python, torch and gloo calls, small kernels) beside its kernel work, and a
# rank waits for only about one piece to start and finish the pipeline:
# on 4 local ranks (2 cores, gloo, 8M elements over a shaped 1 Gbit/s link)
# a rank's ring used 81/48/28 ms of CPU with pieces of 64 KiB/256 KiB/1 MiB,
# for similar wall times.
PIECE_BYTES = 1 << 20


@dataclass
class ErrorFeedback:
    """Residuals of quantization, one per tensor (keyed by ``key``, default
    the tensor's identity), carried from one ``all_reduce`` call to the next."""

    residuals: dict[Any, torch.Tensor] = field(default_factory=dict)

    def residual(self, key: Any, numel: int) -> torch.Tensor:
        r = self.residuals.get(key)
        if r is None or r.numel() != numel:  # kept flat: tensors of any shape
            r = self.residuals[key] = torch.zeros(numel, dtype=torch.float32)
        return r


def _bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """[begin, end) of ``parts`` consecutive parts of n, sizes differing by at most one."""
    base, extra = divmod(n, parts)
    out, begin = [], 0
    for c in range(parts):
        end = begin + base + (c < extra)
        out.append((begin, end))
        begin = end
    return out


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class _Codec:
    """Pieces of a float32 accumulator to messages and back: quantization
    with per-piece or per-group parameters, non-finite values recorded."""

    def __init__(self, qdt: DataType, group_size: int | None, rounding: str) -> None:
        self.qdt, self.g, self.rounding = qdt, group_size, rounding
        self.storage = _arrays.torch_storage(qdt)
        self.nonfinite: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, values) this rank zeroed

    def header(self, m: int) -> int:
        return _PARAMS.size if self.g is None else 8 + _pad8(8 * (m // self.g))

    def size(self, m: int) -> int:
        return self.header(m) + self.qdt.nbytes(m)

    def _data(self, buf: torch.Tensor, m: int) -> torch.Tensor:
        return buf[self.header(m):].view(self.storage)

    def _finite(self, piece: torch.Tensor, begin: int) -> tuple[torch.Tensor, bool]:
        """[min, max] of the piece after recording and zeroing its non-finite
        values; one NaN-propagating pass in the common all-finite case."""
        lo_hi = torch.stack(torch.aminmax(piece))
        if all(map(math.isfinite, lo_hi.tolist())):
            return lo_hi, False
        bad = (~torch.isfinite(piece)).nonzero().reshape(-1)
        self.nonfinite.append((bad + begin, piece[bad].clone()))
        piece[bad] = 0.0
        return torch.stack(torch.aminmax(piece)), True

    def encode(self, piece: torch.Tensor, begin: int, buf: torch.Tensor, residual: torch.Tensor | None, flags: int) -> int:
        """Quantize ``piece`` (elements [begin, begin + m) of the accumulator)
        into ``buf``; with a residual, add this quantization's error to it.
        Returns ``flags``, with _NONFINITE set if the piece held a NaN or ±inf."""
        m, qdt, seed = piece.numel(), self.qdt, secrets.randbits(64)
        lo_hi, nonfinite = self._finite(piece, begin) if m else (piece, False)
        flags |= _NONFINITE if nonfinite else 0
        data = self._data(buf, m)
        if self.g is None:
            p = _api.compute_params(lo_hi, qdt)  # they depend on min and max only
            _PARAMS.pack_into(buf.numpy().data, 0, flags, p.scale, qdt.raw_zero_point(p.zero_point))
            kw: dict[str, Any] = {"scale": p.scale, "zero_point": p.zero_point}
        else:
            rows = piece.view(m // self.g, self.g)
            p = _api.compute_params(rows, qdt, group_size=self.g)
            groups = m // self.g
            _FLAGS.pack_into(buf.numpy().data, 0, flags)
            buf[8 : 8 + 4 * groups].view(torch.float32).copy_(p.scale.reshape(-1))
            buf[8 + 4 * groups : 8 + 8 * groups].view(torch.int32).copy_(p.zero_point.reshape(-1))
            kw = {"scale": p.scale, "zero_point": p.zero_point, "group_size": self.g}
            piece = rows
        _api.quantize(piece, qdt, round_mode=self.rounding, seed=seed, out=data, **kw)
        if residual is not None:
            # error = piece - dequantize(quantize(piece)), with the same seed: exactly what was lost.
            residual.add_(piece.reshape(-1))
            residual.sub_(_api.fake_quantize(piece, qdt, round_mode=self.rounding, seed=seed, **kw).reshape(-1))
        return flags

    def decode(self, buf: torch.Tensor, out: torch.Tensor, reduce: str) -> int:
        """Dequantize a message straight into ``out`` (set, or add for the
        ring's folds); returns the message's flags."""
        m = out.numel()
        if self.g is None:
            flags, scale, raw = _PARAMS.unpack_from(buf.numpy().data, 0)
            shape = (m,) if self.qdt.is_packed else None
            _api.dequantize(self._data(buf, m), scale=scale, zero_point=self.qdt.zero_point_from_raw(raw),
                            qdtype=self.qdt, shape=shape, reduce=reduce, out=out)
            return flags
        (flags,) = _FLAGS.unpack_from(buf.numpy().data, 0)
        groups = m // self.g
        scales = buf[8 : 8 + 4 * groups].view(torch.float32).reshape(groups, 1)
        zero_points = buf[8 + 4 * groups : 8 + 8 * groups].view(torch.int32).reshape(groups, 1)
        _api.dequantize(self._data(buf, m), scale=scales, zero_point=zero_points, qdtype=self.qdt,
                        shape=(groups, self.g), group_size=self.g, reduce=reduce, out=out.view(groups, self.g))
        return flags


class _Workspaces:
    """Message buffers kept from one call to the next (first touches of fresh
    memory would cost more than quantizing into it). A call takes one and
    gives it back only when no transfer into it can still be running."""

    def __init__(self) -> None:
        self._free: list[torch.Tensor] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> torch.Tensor:
        with self._lock:
            for i, w in enumerate(self._free):
                if w.numel() >= nbytes:
                    return self._free.pop(i)
        return torch.empty(nbytes, dtype=torch.uint8)

    def give(self, w: torch.Tensor) -> None:
        with self._lock:
            self._free = sorted(self._free + [w], key=torch.Tensor.numel)[-2:]


_workspaces = _Workspaces()


class _Ring:
    """One pipelined ring all-reduce of a flat float32 accumulator."""

    def __init__(self, acc: torch.Tensor, codec: _Codec, residual: torch.Tensor | None, group: Any, timeout: float,
                 profile: dict | None) -> None:
        self.acc, self.codec, self.residual, self.group = acc, codec, residual, group
        self.timeout = datetime.timedelta(seconds=timeout)
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.profile = profile
        self.waited = 0.0
        unit = codec.g or 1  # chunks and pieces are cut at group boundaries
        units = acc.numel() // unit
        chunks = _bounds(units, self.world)
        width = max(e - b for b, e in chunks)
        per_piece = max(1, PIECE_BYTES * 8 // (codec.qdt.bit_size * unit))
        self.pieces = max(1, -(-width // per_piece))
        # spans[c][k]: elements [begin, end) of piece k of chunk c
        self.spans = [[(unit * (b + pb), unit * (b + pe)) for pb, pe in _bounds(e - b, self.pieces)] for b, e in chunks]
        self.slot = _pad8(max(codec.size(e - b) for c in self.spans for b, e in c))

    def _failed(self, what: str, e: RuntimeError) -> RuntimeError:
        return RuntimeError(f"piquant.distributed.all_reduce: {what} with ranks {(self.rank - 1) % self.world} → me → "
                            f"{(self.rank + 1) % self.world} failed or timed out after {self.timeout.total_seconds():g} s "
                            f"(a peer exited or hangs?): {e}")

    def _wait(self, work: Any, what: str) -> None:
        t = time.perf_counter()
        try:
            work.wait(self.timeout)
        except RuntimeError as e:
            raise self._failed(what, e) from e
        self.waited += time.perf_counter() - t

    def _post(self, send: bool, message: torch.Tensor, tag: int) -> Any:
        """isend to the next rank or irecv from the previous: posting fails at
        once where the connection to a peer that exited is already reset."""
        try:
            if send:
                return dist.isend(message, group_dst=(self.rank + 1) % self.world, group=self.group, tag=tag)
            return dist.irecv(message, group_src=(self.rank - 1) % self.world, group=self.group, tag=tag)
        except RuntimeError as e:
            raise self._failed("send" if send else "receive", e) from e

    def run(self) -> int:
        """Runs the ring; returns the OR of every rank's flags."""
        world, rank, P, codec, acc = self.world, self.rank, self.pieces, self.codec, self.acc
        steps = 2 * (world - 1)
        count, sends = steps * P, 4  # messages; encode buffers in flight
        work = _workspaces.take((count + sends) * self.slot)
        start, cpu = time.perf_counter(), time.thread_time()

        def span(t: int, k: int, sending: bool) -> tuple[int, int]:
            return self.spans[(rank - t - (0 if sending else 1)) % world][k]

        def message(slot: int, b: int, e: int) -> torch.Tensor:
            return work[slot * self.slot : slot * self.slot + codec.size(e - b)]

        def res(b: int, e: int) -> torch.Tensor | None:
            return None if self.residual is None else self.residual[b:e]

        recvs = []
        for i in range(count):
            b, e = span(i // P, i % P, False)
            recvs.append(self._post(False, message(i, b, e), i))
        in_flight: list[Any] = [None] * sends
        forwards = []
        flags = 0
        for i in range(count):
            t, k = divmod(i, P)
            b, e = span(t, k, True)
            if t:
                self._wait(recvs[i - P], "receive")
                flags |= codec.decode(message(i - P, b, e), acc[b:e], "add" if t < world else "set")
            if t < world:  # quantize: a partial sum, or at t = W-1 the finished chunk
                slot = count + i % sends
                if in_flight[i % sends] is not None:
                    self._wait(in_flight[i % sends], "send")
                out = message(slot, b, e)
                flags = codec.encode(acc[b:e], b, out, res(b, e), flags)
                if t == world - 1:
                    codec.decode(out, acc[b:e], "set")  # the owner keeps what the others get
                in_flight[i % sends] = self._post(True, out, i)
            else:  # forward the owner's bytes unchanged, with the flags known here
                out = message(i - P, b, e)
                _FLAGS.pack_into(out.numpy().data, 0, flags)
                forwards.append(self._post(True, out, i))
        for k in range(P):
            i = count - P + k
            b, e = span(steps, k, True)  # the chunk received at the last step
            self._wait(recvs[i], "receive")
            flags |= codec.decode(message(i, b, e), acc[b:e], "set")
        for w in forwards + [w for w in in_flight if w is not None]:
            self._wait(w, "send")
        _workspaces.give(work)
        if self.profile is not None:
            total = time.perf_counter() - start
            self.profile.update(seconds=total, wait_seconds=self.waited, compute_seconds=total - self.waited,
                                cpu_seconds=time.thread_time() - cpu,
                                messages=count, pieces_per_chunk=P, bytes_sent=self._bytes_sent())
        return flags

    def _bytes_sent(self) -> int:
        r, w = self.rank, self.world
        return sum(self.codec.size(e - b) for t in range(2 * (w - 1)) for b, e in self.spans[(r - t) % w])


def _nonfinite_all_reduce(codec: _Codec, acc: torch.Tensor, group: Any, timeout: float) -> None:
    """Where the float32 sum of every rank's recorded non-finite values (0
    elsewhere) is not finite, it is the result: torch's semantics for NaN and ±inf."""
    special = torch.zeros(acc.numel(), dtype=torch.float32)
    for idx, vals in codec.nonfinite:
        special[idx] = vals
    try:
        dist.all_reduce(special, group=group, async_op=True).wait(datetime.timedelta(seconds=timeout))
    except RuntimeError as e:
        raise RuntimeError(f"piquant.distributed.all_reduce: the all-reduce of non-finite values failed or timed out "
                           f"after {timeout:g} s (a peer exited or hangs?): {e}") from e
    hit = ~torch.isfinite(special)
    acc[hit] = special[hit]
    acc[torch.isnan(acc)] = float("nan")  # one NaN bit pattern on every rank


def _tensors(tensor: object) -> list[torch.Tensor]:
    """``tensor`` (one tensor, or a list or tuple of them) as a checked list."""
    items: list[object] = list(tensor) if isinstance(tensor, (list, tuple)) else [tensor]
    tensors = []
    for i, t in enumerate(items):
        arg = "tensor" if len(items) == 1 else f"tensor[{i}]"
        if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
            raise TypeError(f"{arg}: expected a CPU torch tensor")
        if t.dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"{arg}: expected float32 or bfloat16, got {t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"{arg}: expected a contiguous tensor (it is reduced in place)")
        tensors.append(t)
    return tensors


def all_reduce(
    tensor: torch.Tensor | Sequence[torch.Tensor],
    group: Any = None,
    *,
    dtype: Any = "uint8",
    op: str = "sum",
    rounding: str = "stochastic",
    group_size: int | None = None,
    error_feedback: ErrorFeedback | None = None,
    key: Any = None,
    timeout: float = 120.0,
    profile: dict | None = None,
) -> Any:
    """All-reduce ``tensor`` (or a list of tensors, reduced as one flat
    bucket in one ring) in place over ``group``, sending it quantized to
    ``dtype`` (uint8 by default; any piquant quantized type). ``op`` is "sum"
    or "avg"; ``rounding`` "stochastic" (unbiased) or "nearest";
    ``group_size=g`` gives every run of g elements its own scale and zero
    point (types of at most 16 bits). float32 and bfloat16 tensors; partial
    sums are kept in float32. NaN and ±inf propagate as in torch's
    all-reduce. Returns ``tensor``, identical on every rank. A peer that
    exits or stops answering makes the call raise RuntimeError within
    ``timeout`` seconds. ``profile``, a dict, receives the ring's seconds
    (total, waiting for transfers, computing) and bytes sent."""
    tensors = _tensors(tensor)
    if op not in ("sum", "avg"):
        raise ValueError(f"op: expected 'sum' or 'avg', got {op!r}")
    if rounding not in ("stochastic", "nearest"):
        raise ValueError(f"rounding: expected 'stochastic' or 'nearest', got {rounding!r}")
    qdt = resolve(dtype, "dtype", quantized=True)
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size: expected a positive integer, got {group_size!r}")
        if qdt.bit_size > 16:
            raise ValueError(f"group_size: per-group parameters travel as int32 zero points; {qdt.short_name} needs per-tensor ones")
    world = dist.get_world_size(group)
    n = sum(t.numel() for t in tensors)
    padded = n if group_size is None else -(-n // group_size) * group_size
    # A single float32 tensor is reduced in its own memory; anything else through a flat float32 copy.
    direct = len(tensors) == 1 and tensors[0].dtype == torch.float32 and padded == n
    if direct:
        acc = tensors[0].view(-1)
    else:
        acc = torch.zeros(padded, dtype=torch.float32)
        begin = 0
        for t in tensors:
            acc[begin : begin + t.numel()] = t.reshape(-1)
            begin += t.numel()
    residual = None
    if error_feedback is not None:
        default_key = id(tensor) if len(tensors) == 1 else tuple(id(t) for t in tensors)
        residual = error_feedback.residual(default_key if key is None else key, padded)
        acc.add_(residual)
        residual.zero_()
    if world > 1 and n:
        codec = _Codec(qdt, group_size, rounding)
        if _Ring(acc, codec, residual, group, timeout, profile).run() & _NONFINITE:
            _nonfinite_all_reduce(codec, acc, group, timeout)
    if op == "avg":
        acc.div_(world)
    if not direct:
        begin = 0
        for t in tensors:
            t.view(-1).copy_(acc[begin : begin + t.numel()])
            begin += t.numel()
    return tensor


@dataclass
class CommHookState:
    """State of :func:`ddp_comm_hook`: how buckets are quantized, their
    residuals when ``error_feedback`` is on (one per bucket index), and the
    thread that reduces them one after the other."""

    dtype: Any = "uint8"
    rounding: str = "stochastic"
    error_feedback: bool = False
    group: Any = None
    group_size: int | None = None
    timeout: float = 120.0
    feedback: ErrorFeedback | None = None
    _runner: ThreadPoolExecutor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        resolve(self.dtype, "dtype", quantized=True)
        if self.rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding: expected 'stochastic' or 'nearest', got {self.rounding!r}")
        if self.error_feedback and self.feedback is None:
            self.feedback = ErrorFeedback()

    def submit(self, work: Callable[[], None]) -> None:
        # One thread: DDP hands buckets over in index order on every rank, and
        # the rings of two buckets must not interleave on the group.
        if self._runner is None:
            self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piquant-ddp-hook")
        self._runner.submit(work)


def ddp_comm_hook(state: CommHookState, bucket: dist.GradBucket) -> torch.futures.Future:
    """A DistributedDataParallel communication hook: averages the bucket's
    gradients over ``state.group`` with :func:`all_reduce`, as DDP's own
    all-reduce does. The reduction runs on the state's thread while backward
    goes on; the returned future completes with the bucket (or the error).

        model.register_comm_hook(CommHookState(dtype="uint4", error_feedback=True), ddp_comm_hook)
    """
    buf, index = bucket.buffer(), bucket.index()
    fut: torch.futures.Future = torch.futures.Future()

    def reduce() -> None:
        try:
            all_reduce(buf, state.group, dtype=state.dtype, op="avg", rounding=state.rounding, group_size=state.group_size,
                       error_feedback=state.feedback, key=index, timeout=state.timeout)
        except BaseException as e:  # handed to DDP, which raises it from backward()
            fut.set_exception(e)
        else:
            fut.set_result(buf)

    state.submit(reduce)
    return fut


# DDP checks the hook's annotations as objects (this module's are strings).
ddp_comm_hook.__annotations__.update(state=CommHookState, bucket=dist.GradBucket, **{"return": torch.futures.Future[torch.Tensor]})
