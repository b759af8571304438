"""GGUF block formats: native kernels vs piquant_reference.gguf bit for bit
(every ISA variant, thread count, float type, and blocks with NaN, ±inf,
signed zeros and denormals), and vs the `gguf` package byte for byte."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import piquant
import piquant_reference as ref
from conftest import ISAS, THREADS, as_bytes
from piquant_reference import gguf as ref_gguf

FORMATS = tuple(ref_gguf.FORMATS)
NP_FLOAT = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")


def block_rows(rng, blocks: int, *, nonfinite: bool = True, mixed_zeros: bool = True) -> np.ndarray:
    """`blocks` blocks of 32 float32 values, one kind of block each: normal
    data at every magnitude, ties of the rounding, constant and all-zero
    blocks, equal magnitudes of both signs, float16's extremes and
    subnormal scales, and (optionally) NaN, ±inf and mixed ±0 blocks."""
    x = (rng.standard_normal((blocks, 32)) * rng.choice([1e-30, 1e-6, 1e-3, 1.0, 1e4], (blocks, 1))).astype(np.float32)
    kinds = rng.integers(0, 12 if nonfinite else 8, blocks)
    for b, kind in enumerate(kinds):
        row = x[b]
        if kind == 1:
            row[:] = np.arange(32) - 15.5  # halves
        elif kind == 2:
            row[:] = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 5)  # constant
        elif kind == 3:
            row[:] = rng.choice([0.0, -0.0], 32) if mixed_zeros else rng.choice([0.0, -0.0])
        elif kind == 4:
            row[:] = -7.0
            row[rng.integers(0, 32)] = 7.0  # the sign of the largest magnitude decides Q4_0's d
        elif kind == 5:
            row[:] = np.float32(65504.0) * rng.choice([-1, 1], 32)
        elif kind == 6:
            row[:] = rng.standard_normal(32) * rng.choice([1e-38, 1e-40, 1e-43])  # subnormal range
        elif kind == 7:
            row[:] = (rng.integers(-127, 128, 32) + 0.5) * 0.25  # Q8_0 ties after scaling
        elif kind == 8:
            row[rng.integers(0, 32, 2)] = np.nan
        elif kind == 9:
            row[rng.integers(0, 32)] = rng.choice([np.inf, -np.inf])
        elif kind == 10:
            row[rng.integers(0, 32, 3)] = np.float32(3e38) * rng.choice([-1, 1], 3)  # x - min overflows
        elif kind == 11:
            row[:] = rng.choice([1.0, 2.0]) * np.abs(row)
            row[rng.integers(0, 32, 2)] = rng.choice([0.0, -0.0], 2) if mixed_zeros else rng.choice([0.0, -0.0])  # zero as the min
    return x


@pytest.mark.parametrize("ftype", tuple(NP_FLOAT))
@pytest.mark.parametrize("fmt", FORMATS)
def test_native_matches_reference(contexts, rng, fmt, ftype):
    for blocks in (1, 2, 3, 7, 1025, 3001):  # 3001 blocks: split over threads
        x32 = block_rows(rng, blocks)
        x = ref.f32_to_bf16_bits(x32).view(ml_dtypes.bfloat16) if ftype == "bfloat16" else x32.astype(NP_FLOAT[ftype])
        if ftype == "float64":
            x = x + rng.standard_normal(x.shape) * 1e-9  # values float32 must round
        want = ref_gguf.quantize(x, fmt).reshape(blocks, -1)
        want_back = ref_gguf.dequantize(want, fmt).reshape(blocks, 32)
        stored = np.random.default_rng(blocks).integers(0, 256, want.shape, dtype=np.uint16).astype(np.uint8)
        stored[:, :2] = want[:, :2]  # keep d finite mostly; random bytes elsewhere (m, codes)
        want_stored = ref_gguf.dequantize(stored, fmt).reshape(blocks, 32)
        for isa in ISAS:
            for threads in THREADS:
                ctx = contexts(isa, threads)
                got = piquant.gguf.quantize(x, fmt, ctx=ctx)
                np.testing.assert_array_equal(got, want, err_msg=f"{blocks} blocks {isa} threads={threads}")
                for data, expect in ((got, want_back), (stored, want_stored)):
                    back = piquant.gguf.dequantize(data, fmt, ctx=ctx)
                    np.testing.assert_array_equal(back.view(np.uint32), expect.view(np.uint32), err_msg=f"dequantize {isa} {threads}")
                half = piquant.gguf.dequantize(got, fmt, dtype=NP_FLOAT[ftype], ctx=ctx)
                narrowed = ref.f32_to_bf16_bits(want_back) if ftype == "bfloat16" else want_back.astype(NP_FLOAT[ftype])
                np.testing.assert_array_equal(as_bytes(half), as_bytes(narrowed))


@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_and_values_match_the_gguf_package(rng, fmt):
    gguf = pytest.importorskip("gguf")
    from gguf import quants

    qtype = getattr(gguf.GGMLQuantizationType, fmt)
    for trial in range(6):
        # Mixed ±0 blocks excepted: numpy's min/max pick a zero's sign by position.
        x = block_rows(rng, 512, mixed_zeros=False).reshape(64, 256) if trial % 2 else (rng.standard_normal((64, 256)) * 3).astype(np.float32)
        with np.errstate(invalid="ignore", over="ignore"):
            theirs = quants.quantize(x, qtype)
        ours = piquant.gguf.quantize(x, qtype)
        assert ours.shape == theirs.shape
        assert np.array_equal(ours, theirs), (trial, np.argwhere(ours != theirs)[:4])
        with np.errstate(invalid="ignore", over="ignore"):
            back = quants.dequantize(theirs, qtype)
        assert np.array_equal(piquant.gguf.dequantize(ours, qtype).view(np.uint32), back.view(np.uint32))


def test_torch_and_out_and_types():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    out = torch.empty(4, 2 * 34, dtype=torch.uint8)
    assert piquant.gguf.quantize(x, 8, out=out) is out
    assert torch.equal(out, torch.from_numpy(piquant.gguf.quantize(x.float().numpy(), "q8_0")))
    y = piquant.gguf.dequantize(out, "Q8_0", dtype=torch.float16)
    assert y.dtype == torch.float16 and tuple(y.shape) == (4, 64)
    assert piquant.gguf.block_bytes("Q4_1") == 20


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: piquant.gguf.quantize(np.ones(33, np.float32), "Q8_0"), ValueError, "x: the last axis has 33 elements; Q8_0 blocks need a multiple of 32"),
        (lambda: piquant.gguf.quantize(np.ones(256, np.float32), "Q2_K"), ValueError, "qtype: expected one of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4, Q4_K"),
        (lambda: piquant.gguf.quantize(np.ones(32, np.int32), "Q8_0"), TypeError, "x: expected float32"),
        (lambda: piquant.gguf.quantize(np.ones(32, np.float32), "Q8_0", out=np.empty(33, np.uint8)), ValueError, "out: expected 34 elements"),
        (lambda: piquant.gguf.dequantize(np.ones(35, np.uint8), "Q8_0"), ValueError, "not a whole number of 34-byte blocks"),
        (lambda: piquant.gguf.dequantize(np.ones(34, np.int8), "Q8_0"), TypeError, "data: expected uint8"),
    ],
)
def test_bad_arguments_are_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_c_abi_rejects_bad_calls(contexts):
    from piquant import _backend

    lib = _backend.library()
    ctx = contexts(ISAS[0], 1)._backend._ctx
    x = np.ones(64, np.float32)
    out = np.empty(68, np.uint8)
    assert lib.piquant_gguf_quantize(ctx, x.ctypes.data, 0, out.ctypes.data, 9, 64) == 2
    assert lib.piquant_last_error().decode().startswith("type: expected a GGUF block type")
    assert lib.piquant_gguf_quantize(ctx, x.ctypes.data, 0, out.ctypes.data, 8, 48) == 1
    assert lib.piquant_last_error().decode() == "numel: 48 is not a multiple of the block size 32"
    assert lib.piquant_gguf_quantize(ctx, None, 0, out.ctypes.data, 8, 64) == 1
    assert lib.piquant_gguf_block_bytes(3) == 20 and lib.piquant_gguf_block_bytes(9) == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_large_outputs_stream_and_still_match(contexts, rng, fmt):
    """Outputs of 8 MiB and more are written with streaming stores, from any
    alignment: the bytes must not change."""
    blocks = 70_001  # 2.24M float32 values: 8.96 MB
    x = block_rows(rng, blocks)
    data = ref_gguf.quantize(x, fmt)
    want = ref_gguf.dequantize(data, fmt)
    for isa in ISAS:
        for threads in (1, 2):
            buf = np.zeros(blocks * 32 + 1, np.float32)
            out = buf[1:]  # 4 bytes past a cache line boundary
            piquant.gguf.dequantize(data.reshape(-1), fmt, out=out, ctx=contexts(isa, threads))
            np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32), err_msg=f"{isa} threads={threads}")
            assert buf[0] == 0


def test_nan_scales_with_every_payload_bit_narrow_to_bfloat16(contexts):
    """A float16 scale of 0xFFFF (a negative NaN, all payload bits set) widens
    to 0xFFFFE000: rounding it to bfloat16 must not carry out of 32 bits
    (a ReleaseSafe build traps on that overflow; found by fuzzing)."""
    blocks = np.zeros((2, 34), np.uint8)
    blocks[:, :2] = 0xFF
    blocks[:, 2:] = np.arange(32, dtype=np.uint8)
    want = ref.f32_to_bf16_bits(ref_gguf.dequantize(blocks, "Q8_0"))
    for isa in ISAS:
        got = piquant.gguf.dequantize(blocks.reshape(-1), "Q8_0", dtype=ml_dtypes.bfloat16, ctx=contexts(isa, 1))
        np.testing.assert_array_equal(got.view(np.uint16), want)
        acc = np.full(64, 0xFFFF, np.uint16).view(ml_dtypes.bfloat16)  # NaN accumulators too
        piquant.dequantize(np.arange(64, dtype=np.uint8), scale=0.5, zero_point=3, qdtype="uint8", reduce="add", out=acc, ctx=contexts(isa, 1))
        want_acc = np.full(64, 0xFFFF, np.uint16)
        ref.dequantize(np.arange(64, dtype=np.uint8), "uint8", 0.5, 3, out_dtype="bfloat16", out=want_acc, reduce="add")
        np.testing.assert_array_equal(acc.view(np.uint16), want_acc)
