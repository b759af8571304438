"""The native MX and NVFP4 kernels (zig/formats/mx.zig) against the numpy
reference, byte for byte, on every ISA variant this CPU runs and 1-3
threads: adversarial blocks (ties of each element format, values at and
past max, subnormals of each format, ±0, all-zero and denormal blocks, NaN,
±inf, raw bit patterns), every block size the API takes, every float type,
both scale rules and rounding modes, sizes that do and do not split evenly
over the threads; torchao's `to_mx` / `nvfp4_quantize` against the native
backend; bad arguments at the C ABI."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from test_mx_reference import _ao, _elem, adversarial_blocks, as_input

import piquant
import piquant.mx as pmx
import piquant_reference as ref
from conftest import ISAS, THREADS, in_float_type
from piquant import _backend
from piquant_reference import mx as rmx

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")

MX = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4")


def hostile(rng, fmt: str, rows: int, block: int) -> np.ndarray:
    """adversarial_blocks with NaN, ±inf, ±0 and raw float32 bit patterns
    (NaN payloads of both signs, subnormals) sprinkled over some blocks."""
    x = adversarial_blocks(rng, "mxfp4" if fmt in ("mxint8", "nvfp4") else fmt, rows, block).reshape(-1)
    k = x.size // 40
    x[rng.integers(0, x.size, k)] = rng.choice(np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32), k)
    x.view(np.uint32)[rng.integers(0, x.size, k)] = rng.integers(0, 2**32, k, dtype=np.uint64).astype(np.uint32)
    return x


def reference(x: np.ndarray, fmt: str, bs: int, mode: str = "floor", round_mode: str = "nearest", seed: int = 0, pts=None):
    data, scales = rmx.quantize(x, fmt, bs, mode, round_mode, seed if round_mode == "stochastic" else None, pts)
    return data.view(np.uint8).reshape(-1), scales.view(np.uint8).reshape(-1)


def native(ctx, x, fmt: str, bs: int, mode: str = "floor", round_mode: str = "nearest", seed: int = 0, pts=None):
    m = pmx.quantize(x, fmt, block_size=bs, scale_mode=mode, round_mode=round_mode, seed=seed if round_mode == "stochastic" else None,
                     per_tensor_scale=pts, ctx=ctx)
    return m, np.asarray(m.data).reshape(-1).view(np.uint8), np.asarray(m.scales).reshape(-1).view(np.uint8)


# (rows, row length): one block; not a multiple of the vector width; above
# the parallel threshold with chunks that do not split evenly over 2 or 3.
SHAPES = ((1, 96), (3, 288), (37, 1824))


def block_sizes(fmt: str) -> tuple[int, ...]:
    return (16,) if fmt == "nvfp4" else (32, 16, 48, 2, 96) if fmt == "mxfp4" else (32, 16, 48, 3, 96)


@pytest.mark.parametrize("mode", ("floor", "rceil"))
@pytest.mark.parametrize("fmt", pmx.FORMATS)
def test_quantize_matches_reference(rng, contexts, fmt, mode):
    for bs in block_sizes(fmt):
        for rows, n in SHAPES:
            n = n // bs * bs if n % bs else n
            x = hostile(rng, fmt, rows * n // bs, bs).reshape(rows, n)
            want_d, want_s = reference(x, fmt, bs, mode)
            for isa in ISAS:
                for threads in THREADS:
                    _, d, s = native(contexts(isa, threads), x, fmt, bs, mode)
                    where = f"{isa} {threads} threads, block {bs}, shape {x.shape}"
                    np.testing.assert_array_equal(s, want_s, err_msg=f"scales, {where}")
                    np.testing.assert_array_equal(d, want_d, err_msg=f"data, {where}")


@pytest.mark.parametrize("fmt", pmx.FORMATS)
def test_finite_batches_match_reference(rng, contexts, fmt):
    """Batches of blocks without NaN or infinity, whose codes skip the NaN
    selects and the per-block test (zig/formats/mx.zig, batchCodes), and
    later batches holding one NaN or one infinity: both paths in one call."""
    for bs in (16,) if fmt == "nvfp4" else (32, 16, 64):
        rows, n = 24, 2048
        x = adversarial_blocks(rng, "mxfp4" if fmt in ("mxint8", "nvfp4") else fmt, rows * n // bs, bs).reshape(rows, n)
        x[~np.isfinite(x)] = 0
        x[-5, 7] = np.nan
        x[-2, 100] = -np.inf
        for mode in ("floor",) if fmt == "nvfp4" else ("floor", "rceil"):
            want_d, want_s = reference(x, fmt, bs, mode)
            for isa in ISAS:
                for threads in THREADS:
                    _, d, s = native(contexts(isa, threads), x, fmt, bs, mode)
                    where = f"{isa} {threads} threads, block {bs}, {mode}"
                    np.testing.assert_array_equal(s, want_s, err_msg=f"scales, {where}")
                    np.testing.assert_array_equal(d, want_d, err_msg=f"data, {where}")


@pytest.mark.parametrize("fmt", pmx.FORMATS)
def test_stochastic_rounding_matches_reference(rng, contexts, fmt):
    bs = 16 if fmt == "nvfp4" else 32
    x = hostile(rng, fmt, 37 * 1824 // bs, bs).reshape(37, 1824)
    for seed in (0, 2**64 - 1, 12345):
        want_d, want_s = reference(x, fmt, bs, "rceil" if seed == 0 and fmt != "nvfp4" else "floor", "stochastic", seed)
        for isa in ISAS:
            for threads in THREADS:
                _, d, s = native(contexts(isa, threads), x, fmt, bs, "rceil" if seed == 0 and fmt != "nvfp4" else "floor", "stochastic", seed)
                np.testing.assert_array_equal(d, want_d, err_msg=f"{isa} {threads} seed {seed}")
                np.testing.assert_array_equal(s, want_s)


@pytest.mark.parametrize("ftype", ("bfloat16", "float16", "float64"))
@pytest.mark.parametrize("fmt", ("mxfp8_e5m2", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4"))
def test_other_float_types(rng, contexts, fmt, ftype):
    bs = 16 if fmt == "nvfp4" else 32
    x = in_float_type(hostile(rng, fmt, 40 * 1024 // bs, bs), ftype, rng).reshape(40, 1024)
    want_d, want_s = reference(x, fmt, bs, "rceil" if fmt != "nvfp4" else "floor")
    for isa in ISAS:
        for threads in (1, 3):
            _, d, s = native(contexts(isa, threads), x, fmt, bs, "rceil" if fmt != "nvfp4" else "floor")
            np.testing.assert_array_equal(s, want_s, err_msg=f"{isa} {threads}")
            np.testing.assert_array_equal(d, want_d, err_msg=f"{isa} {threads}")


def test_nvfp4_per_tensor_scale(rng, contexts):
    x = hostile(rng, "nvfp4", 37 * 1824 // 16, 16).reshape(37, 1824)
    for pts in (1e-30, 0.37, float(np.float32(np.nanmax(np.abs(x[np.isfinite(x)])) / (448 * 6))), 3e38):
        want_d, want_s = reference(x, "nvfp4", 16, pts=pts)
        for isa in ISAS:
            for threads in THREADS:
                m, d, s = native(contexts(isa, threads), x, "nvfp4", 16, pts=pts)
                np.testing.assert_array_equal(s, want_s, err_msg=f"{isa} {threads} {pts}")
                np.testing.assert_array_equal(d, want_d, err_msg=f"{isa} {threads} {pts}")
                back = pmx.dequantize(m, ctx=contexts(isa, threads)).reshape(-1)
                np.testing.assert_array_equal(back.view(np.uint32), rmx.dequantize(want_d, want_s, "nvfp4", 16, pts).view(np.uint32))


@pytest.mark.parametrize("fmt", pmx.FORMATS)
def test_dequantize_every_code_and_scale(rng, contexts, fmt):
    """Random bytes as codes and scales (every NaN code, E8M0 255, E4M3
    codes with the sign set) to every float type."""
    for bs in block_sizes(fmt):
        n = 37 * (1824 // bs * bs)
        per = 2 if fmt in ("mxfp4", "nvfp4") else 1
        data = rng.integers(0, 256, n // per, dtype=np.uint8)
        scales = rng.integers(0, 256, n // bs, dtype=np.uint8)
        if fmt != "nvfp4":
            scales[rng.integers(0, scales.size, 5)] = 255
        want = rmx.dequantize(data, scales, fmt, bs, 0.37 if fmt == "nvfp4" else None)
        m = pmx.MXArray(data, scales, fmt, (37, n // 37), bs, 0.37 if fmt == "nvfp4" else None)
        for dtype in ("float32", "bfloat16", "float16", "float64"):
            if dtype == "bfloat16":
                expect = ref.f32_to_bf16_bits(want)
            else:
                with np.errstate(over="ignore"):
                    expect = want.astype(dtype).view(f"u{np.dtype(dtype).itemsize}")
            for isa in ISAS:
                for threads in THREADS:
                    got = pmx.dequantize(m, "bfloat16" if dtype == "bfloat16" else dtype, ctx=contexts(isa, threads))
                    got = got.reshape(-1).view(np.uint16 if dtype == "bfloat16" else expect.dtype)
                    np.testing.assert_array_equal(got, expect, err_msg=f"{isa} {threads} block {bs} {dtype}")


@pytest.mark.skipif(_ao is None, reason="torchao 0.18 (the test extra) is not installed")
@pytest.mark.parametrize("ftype", ("float32", "bfloat16"))
@pytest.mark.parametrize("mode", ("floor", "rceil"))
def test_torchao_to_mx_against_native(rng, contexts, mode, ftype):
    _, mx_tensor, nvfp4, Mode = _ao
    for fmt in MX:
        x = adversarial_blocks(rng, fmt, 600, 32).reshape(20, -1)
        _, xt = as_input(x, ftype)
        s, d = mx_tensor.to_mx(xt, _elem(fmt), 32, Mode.FLOOR if mode == "floor" else Mode.RCEIL)
        for isa in ISAS:
            m = pmx.quantize(xt, fmt, scale_mode=mode, ctx=contexts(isa, 2))
            np.testing.assert_array_equal(m.scales.view(torch.uint8).numpy(), s.view(torch.uint8).numpy().reshape(m.scales.shape), err_msg=f"{fmt} {isa}")
            np.testing.assert_array_equal(m.data.view(torch.uint8).numpy().reshape(-1), d.view(torch.uint8).numpy().reshape(-1), err_msg=f"{fmt} {isa}")
            back = mx_tensor.to_dtype(d, s, _elem(fmt), 32, torch.float32)
            np.testing.assert_array_equal(pmx.dequantize(m, ctx=contexts(isa, 2)).view(torch.int32).numpy().reshape(-1),
                                          back.view(torch.int32).numpy().reshape(-1), err_msg=f"to_dtype {fmt} {isa}")
    x = adversarial_blocks(rng, "nvfp4", 800, 16).reshape(40, -1)
    _, xt = as_input(x, ftype)
    for pts in (None, 0.37):
        s, d = nvfp4.nvfp4_quantize(xt, 16, None if pts is None else torch.tensor(pts, dtype=torch.float32))
        for isa in ISAS:
            m = pmx.quantize(xt, "nvfp4", per_tensor_scale=pts, ctx=contexts(isa, 2))
            np.testing.assert_array_equal(m.scales.view(torch.uint8).numpy().reshape(-1), s.view(torch.uint8).numpy().reshape(-1), err_msg=f"nvfp4 {isa}")
            np.testing.assert_array_equal(m.data.numpy().reshape(-1), d.view(torch.uint8).numpy().reshape(-1), err_msg=f"nvfp4 {isa}")


def test_out_is_written_in_place(rng, contexts):
    x = rng.standard_normal((4, 64)).astype(np.float32)
    want = pmx.quantize(x, "mxfp4", ctx=contexts(ISAS[0], 1))
    data, scales = np.zeros_like(want.data), np.zeros_like(want.scales)
    m = pmx.quantize(x, "mxfp4", out=(data, scales), ctx=contexts(ISAS[0], 1))
    assert m.data is data and m.scales is scales
    np.testing.assert_array_equal(data, want.data)
    np.testing.assert_array_equal(scales, want.scales)
    with pytest.raises(ValueError, match="out\\[0\\]: expected a C-contiguous"):
        pmx.quantize(x, "mxfp4", out=(np.zeros((4, 64), np.uint8)[:, ::2], scales))
    with pytest.raises(ValueError, match="out\\[1\\]: the array is read-only"):
        ro = np.zeros_like(scales)
        ro.flags.writeable = False
        pmx.quantize(x, "mxfp4", out=(data, ro))
    both = np.zeros(data.size + scales.size, np.uint8)
    with pytest.raises(ValueError, match="out\\[1\\]: shares memory with out\\[0\\]"):
        pmx.quantize(x, "mxfp4", out=(both[:data.size].reshape(data.shape), both[8:8 + scales.size].reshape(scales.shape)))


def _c_quantize(lib, ctx, x, data, scales, n, row, fmt, bs, mode=0, rmode=0, pts=None):
    p = None if pts is None else ctypes.addressof(pts)
    return lib.piquant_mx_quantize(ctx, x, 0, data, scales, n, row, fmt, bs, mode, rmode, 0, p)


def test_c_abi_rejects_bad_arguments(contexts):
    lib = _backend.library()
    ctx = contexts(ISAS[0], 1)._backend._ctx
    x = np.ones(64, np.float32)
    d = np.zeros(64, np.uint8)
    s = np.zeros(4, np.uint8)
    xp, dp, sp = x.ctypes.data, d.ctypes.data, s.ctypes.data

    def rejects(status, arg, *args, **kw):
        got = _c_quantize(lib, ctx, *args, **kw)
        assert got == status, lib.piquant_last_error()
        assert lib.piquant_last_error().decode().startswith(arg), lib.piquant_last_error()

    rejects(1, "in:", None, dp, sp, 64, 64, 0, 32)
    rejects(1, "out:", xp, None, sp, 64, 64, 0, 32)
    rejects(1, "out_scales:", xp, dp, None, 64, 64, 0, 32)
    rejects(2, "format:", xp, dp, sp, 64, 64, 7, 32)
    rejects(2, "format:", xp, dp, sp, 64, 64, -1, 32)
    rejects(1, "block_size:", xp, dp, sp, 64, 64, 0, 0)
    rejects(1, "block_size: NVFP4", xp, dp, sp, 64, 64, 6, 32)
    rejects(1, "block_size: FP4", xp, dp, sp, 64, 64, 4, 3)
    rejects(1, "row:", xp, dp, sp, 64, 48, 0, 32)
    rejects(1, "numel:", xp, dp, sp, 64, 96, 0, 32)
    rejects(1, "scale_mode:", xp, dp, sp, 64, 64, 0, 32, mode=2)
    rejects(1, "round_mode:", xp, dp, sp, 64, 64, 0, 32, rmode=5)
    rejects(1, "per_tensor_scale: only NVFP4", xp, dp, sp, 64, 64, 0, 32, pts=ctypes.c_float(1))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        rejects(3, "per_tensor_scale:", xp, dp, sp, 64, 64, 6, 16, pts=ctypes.c_float(bad))
    assert lib.piquant_mx_quantize(ctx, xp, 16, dp, sp, 64, 64, 0, 32, 0, 0, 0, None) == 2  # dtype_in: not a float type
    assert lib.piquant_last_error().decode().startswith("dtype_in:")
    assert lib.piquant_mx_quantize(None, xp, 0, dp, sp, 64, 64, 0, 32, 0, 0, 0, None) == 1
    assert lib.piquant_mx_quantize(ctx, None, 0, None, None, 0, 0, 0, 32, 0, 0, 0, None) == 0  # nothing to do
    out = np.zeros(64, np.float32)
    assert lib.piquant_mx_dequantize(ctx, dp, None, out.ctypes.data, 0, 64, 64, 0, 32, None) == 1
    assert lib.piquant_last_error().decode().startswith("scales:")
    assert lib.piquant_mx_dequantize(ctx, dp, sp, out.ctypes.data, 21, 64, 64, 0, 32, None) == 2
    assert lib.piquant_last_error().decode().startswith("dtype_out:")
    assert lib.piquant_mx_dequantize(ctx, dp, sp, out.ctypes.data, 0, 64, 64, 0, 32, None) == 0


def test_reference_backend_gives_the_same_bytes(rng, monkeypatch):
    x = hostile(rng, "mxfp6_e3m2", 64, 32).reshape(8, 256)
    with piquant.Context(1) as nat:
        m = pmx.quantize(x, "mxfp6_e3m2", scale_mode="rceil", ctx=nat)
    monkeypatch.setenv("PIQUANT_BACKEND", "reference")
    with piquant.Context(1) as r:
        assert r._backend.name == "reference"
        m2 = pmx.quantize(x, "mxfp6_e3m2", scale_mode="rceil", ctx=r)
        np.testing.assert_array_equal(pmx.dequantize(m2, ctx=r).view(np.uint32), pmx.dequantize(m).view(np.uint32))
    np.testing.assert_array_equal(m.data, m2.data)
    np.testing.assert_array_equal(m.scales, m2.scales)
