"""docs/semantics.md, *GGUF block formats (llama.cpp)*, *K-quants*: Q4_K,
Q5_K and Q6_K in super-blocks of 256 elements. Vectorized across
sub-blocks; sums and scans run in element order, as llama.cpp's loops do."""

from __future__ import annotations

import numpy as np

from .gguf import _blocks

F = np.float32
BLOCK = 256
FORMATS = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}  # bytes per super-block
_EPS = F(1e-15)  # GROUP_MAX_EPS


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """llama.cpp's nearest_int: the low 23 bits of v + 1.5·2^23, as int32."""
    with np.errstate(over="ignore", invalid="ignore"):
        bits = (np.asarray(v, F) + F(12582912)).view(np.int32)
    return (bits & np.int32(0x7FFFFF)) - np.int32(0x400000)


def _sum(a: np.ndarray, from_zero: bool = True) -> np.ndarray:
    """0 + a[..., 0] + a[..., 1] + … (or from a[..., 0]) in float32, in that order (not pairwise)."""
    if from_zero:
        a = np.concatenate([np.zeros_like(a[..., :1]), a], axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.add.accumulate(a, axis=-1)[..., -1]


def _scan(a: np.ndarray, start: np.ndarray, better: np.ufunc = np.greater, carry: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scan `if (better(a[i], r)) r = a[i]` over the last axis from
    `start`; and `carry[i]` of the last replacement (0 if none)."""
    r, c = start, np.zeros_like(start)
    for i in range(a.shape[-1]):
        take = better(a[..., i], r)
        r = np.where(take, a[..., i], r)
        if carry is not None:
            c = np.where(take, carry[..., i], c)
    return r, c


def _half(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return v.astype(np.float16)


def _qkx2(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """make_qkx2_quants for each row of x: (scale, -min, codes)."""
    mn, _ = _scan(x[:, 1:], x[:, 0], np.less)
    mx, _ = _scan(x[:, 1:], x[:, 0])
    mn = np.where(mn > 0, F(0), mn)
    flat = mx == mn
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sum_w = _sum(w, from_zero=False)
        sum_x = _sum(w * x, from_zero=False)
        iscale = F(nmax) / (mx - mn)
        scale = F(1) / iscale
        L = np.clip(_nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(F)
        best = _sum(w * np.square(scale[:, None] * L + mn[:, None] - x))
        for step in range(nstep + 1):
            # An accepted step's min moves the grid of every later step.
            iscale = (F(rmin) + F(rdelta) * F(step) + F(nmax)) / (mx - mn)
            trial = np.clip(_nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(F)
            wl = w * trial
            sum_l, sum_l2, sum_xl = _sum(wl), _sum(wl * trial), _sum(wl * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            positive = this_min > 0
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
            this_min = np.where(positive, F(0), this_min)
            cur = _sum(w * np.square(this_scale[:, None] * trial + this_min[:, None] - x))
            take = (D > 0) & (cur < best)
            L = np.where(take[:, None], trial, L)
            best = np.where(take, cur, best)
            scale = np.where(take, this_scale, scale)
            mn = np.where(take, this_min, mn)
    scale = np.where(flat, F(0), scale)
    L = np.where(flat[:, None], F(0), L)
    return scale.astype(F), (-mn).astype(F), L.astype(np.int32)


def _qx(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants with rmse_type 1 and no weights for each row of x: (scale, codes + nmax)."""
    amax, mx = _scan(np.abs(x), np.zeros(len(x), F), carry=x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        steps = np.array([*range(-9, 0), *range(1, 10)], dtype=F)
        iscales = np.concatenate([(F(-nmax) / mx)[:, None], -(F(nmax) + F(0.1) * steps)[None, :] / mx[:, None]], axis=1)
        trial = np.clip(_nearest_int(iscales[:, :, None] * x[:, None, :]), -nmax, nmax - 1).astype(F)
        w = x * x
        sumlx = _sum((w * x)[:, None, :] * trial)
        suml2 = _sum(w[:, None, :] * trial * trial)
        scales = sumlx / suml2
        scale = np.where(suml2[:, 0] != 0, scales[:, 0], F(0))
        best = scale * sumlx[:, 0]
        L = trial[:, 0]
        for s in range(1, iscales.shape[1]):
            take = (suml2[:, s] > 0) & (sumlx[:, s] * sumlx[:, s] > best * suml2[:, s])
            L = np.where(take[:, None], trial[:, s], L)
            scale = np.where(take, scales[:, s], scale)
            best = np.where(take, scale * sumlx[:, s], best)
    zero = amax < _EPS
    L = np.where(zero[:, None], -nmax, L)
    return np.where(zero, F(0), scale).astype(F), (L + nmax).astype(np.int32)


def _k_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The 12 bytes of eight 6-bit scales and mins (get_scale_min_k4's layout)."""
    s = np.zeros((len(ls), 12), np.uint8)
    s[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    s[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    s[:, 8:12] = (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4)
    return s


def _scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The six-bit scales and mins back from _k_scales' bytes."""
    ls = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    lm = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return ls, lm


def _six_bits(v: np.ndarray) -> np.ndarray:
    """min(63, uint8(nearest_int(v)))."""
    return np.minimum(_nearest_int(v) & 0xFF, 63).astype(np.uint8)


def _quantize_qk(b: np.ndarray, nmax: int, rmin: float, nstep: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: (d, dmin as float16 bytes, 12 scale bytes, codes (blocks, 256))."""
    x = b.reshape(-1, 32)
    with np.errstate(over="ignore", invalid="ignore"):
        av_x = np.sqrt(_sum(x * x) / F(32))
        w = av_x[:, None] + np.abs(x)
    scales, mins, L = _qkx2(x, w, nmax, rmin, 0.1, nstep)
    scales, mins, L = scales.reshape(-1, 8), mins.reshape(-1, 8), L.reshape(-1, BLOCK)
    max_scale, _ = _scan(scales, np.zeros(len(b), F))
    max_min, _ = _scan(mins, np.zeros(len(b), F))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv_scale = np.where(max_scale > 0, F(63) / max_scale, F(0))
        inv_min = np.where(max_min > 0, F(63) / max_min, F(0))
        ls = _six_bits(inv_scale[:, None] * scales)
        lm = _six_bits(inv_min[:, None] * mins)
        d = _half(max_scale / F(63))
        dmin = _half(max_min / F(63))
        dj = (d.astype(F)[:, None] * ls.astype(F)).repeat(32, axis=1)
        dm = (dmin.astype(F)[:, None] * lm.astype(F)).repeat(32, axis=1)
        fresh = np.clip(_nearest_int((b + dm) / dj), 0, nmax)
    L = np.where(dj != 0, fresh, L).astype(np.uint8)
    head = np.concatenate([d[:, None].view(np.uint8), dmin[:, None].view(np.uint8), _k_scales(ls, lm)], axis=1)
    return head, L


def _low_nibbles(L: np.ndarray) -> np.ndarray:
    """Per 64 codes: 32 bytes, code j low, code j + 32 high."""
    q = (L & 15).reshape(len(L), -1, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(len(L), -1)


def _quantize_q6(b: np.ndarray) -> np.ndarray:
    scales, L = _qx(b.reshape(-1, 16), 32)
    scales, L = scales.reshape(-1, 16), L.reshape(-1, BLOCK)
    max_abs, max_scale = _scan(np.abs(scales), np.zeros(len(b), F), carry=scales)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F(-128) / max_scale
        d = _half(F(1) / iscale)
        sc = np.minimum(_nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
        dj = (d.astype(F)[:, None] * sc.astype(F)).repeat(16, axis=1)
        fresh = np.clip(_nearest_int(b / dj), -32, 31) + 32
    L = np.where(dj != 0, fresh, L).astype(np.uint8)
    q = L.reshape(len(b), 2, 4, 32)
    ql = np.concatenate([(q[:, :, 0] & 15) | ((q[:, :, 2] & 15) << 4), (q[:, :, 1] & 15) | ((q[:, :, 3] & 15) << 4)], axis=2)
    qh = (q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)
    out = np.concatenate([ql.reshape(len(b), -1), qh.reshape(len(b), -1), sc.view(np.uint8), d[:, None].view(np.uint8)], axis=1)
    out[max_abs < _EPS] = 0
    return out


def quantize(x: np.ndarray, fmt: str) -> np.ndarray:
    """The GGUF bytes of x (a multiple of 256 elements), shape (super-blocks, bytes per super-block)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {tuple(FORMATS)}, got {fmt!r}")
    b = _blocks(x, BLOCK)
    if fmt == "Q6_K":
        return _quantize_q6(b)
    nmax, rmin, nstep = (15, -1.0, 20) if fmt == "Q4_K" else (31, -0.5, 15)
    head, L = _quantize_qk(b, nmax, rmin, nstep)
    if fmt == "Q4_K":
        return np.concatenate([head, _low_nibbles(L)], axis=1)
    high = (L >> 4).reshape(len(b), 8, 32) << np.arange(8, dtype=np.uint8)[None, :, None]
    return np.concatenate([head, np.bitwise_or.reduce(high, axis=1), _low_nibbles(L)], axis=1)


def dequantize(blocks: np.ndarray, fmt: str) -> np.ndarray:
    """float32 values of GGUF super-blocks (any shape whose last axis is the block bytes), flat."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {tuple(FORMATS)}, got {fmt!r}")
    b = np.asarray(blocks, np.uint8).reshape(-1, FORMATS[fmt])
    n = len(b)
    if fmt == "Q6_K":
        ql, qh = b[:, :128].reshape(n, 2, 2, 32), b[:, 128:192].reshape(n, 2, 1, 32)
        low = np.stack([ql[:, :, 0] & 15, ql[:, :, 1] & 15, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2)
        high = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
        q = (low | (high << 4)).reshape(n, BLOCK).astype(F) - F(32)
        sc = b[:, 192:208].view(np.int8).astype(F)
        d = b[:, 208:210].copy().view(np.float16).astype(F)
        with np.errstate(invalid="ignore"):
            return ((d * sc).repeat(16, axis=1) * q).reshape(-1)
    d = b[:, 0:2].copy().view(np.float16).astype(F)
    dmin = b[:, 2:4].copy().view(np.float16).astype(F)
    ls, lm = _scale_min(b[:, 4:16])
    qs = b[:, -128:].reshape(n, 4, 1, 32)
    q = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(n, BLOCK)
    if fmt == "Q5_K":
        bit = np.arange(8, dtype=np.uint8)[None, :, None]
        q = q | (((b[:, 16:48].reshape(n, 1, 32) >> bit) & 1) << 4).reshape(n, BLOCK)
    with np.errstate(invalid="ignore"):
        dj = (d * ls.astype(F)).repeat(32, axis=1)
        mj = (dmin * lm.astype(F)).repeat(32, axis=1)
        return (dj * q.astype(F) - mj).reshape(-1)
