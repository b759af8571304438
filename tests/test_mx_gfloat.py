"""MXINT8 against gfloat (Graphcore's numpy model of the OCP MX v1.0
formats: `format_info_mxint8`, `compute_scale_amax`, `encode_block`,
`decode_block`), byte for byte: scale codes, element codes and dequantized
values, on random and adversarial finite blocks (ties at every half step of
both parities and signs, values at and past ±max, blocks whose amax is just
below or at a power of two, denormal, all-zero and ±0 blocks), float32 and
bfloat16 inputs, every block size the native kernels treat differently, on
every ISA variant and thread count and on the reference backend.

gfloat is given the inputs widened to float64 (exactly): it takes
`floor(log2(amax))` in the input's type, and float32's log2 rounds amaxes
just below a power of two (2^100 · (1 - 2^-24)) up to the power, one scale
too high. Its conventions are otherwise the spec's and ours: the scale is
2^clamp(floor(log2 amax) - 0, -127, 127) (2^-127 for all-zero blocks), the
elements x / scale rounded half to even to k · 2^-6 and saturated to
[-2, 127/64] (k = -128 is used). MXINT8 divides denormal blocks by their
scale 2^-127 as OCP and gfloat do; the FP formats divide them by 2^-126 as
torchao does (docs/semantics.md). Outside the comparison's domain by design:
gfloat raises for NaN (int8 has none) and saturates an infinite block to
scale 2^127, elements ±max, where piquant stores scale 255 (NaN), as for
the FP formats."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import piquant
import piquant.mx as pmx
import piquant_reference as ref
from conftest import ISAS, THREADS

gfloat = pytest.importorskip("gfloat")
from gfloat.formats import format_info_ocp_e8m0, format_info_ocp_int8  # noqa: E402

E8M0 = format_info_ocp_e8m0
INT8 = format_info_ocp_int8


def oracle(x: np.ndarray, bs: int) -> tuple[np.ndarray, np.ndarray]:
    """gfloat's (element codes, scale codes) of finite x, block by block."""
    fmt = gfloat.BlockFormatInfo("mxint8", INT8, bs, E8M0)
    blocks = np.asarray(x, np.float64).reshape(-1, bs)
    codes = np.empty(blocks.shape, np.uint8)
    scales = np.empty(len(blocks), np.uint8)
    for i, b in enumerate(blocks):
        scale = gfloat.compute_scale_amax(INT8.emax, b)
        enc = list(gfloat.encode_block(fmt, scale, b / scale))
        scales[i] = enc[0]
        codes[i] = enc[1:]
    return codes.reshape(-1), scales


def blocks(rng, rows: int, bs: int) -> np.ndarray:
    """rows blocks of bs float32 values: the cases in rotation, each block
    at a random scale 2^e across the float32 range."""
    x = np.empty((rows, bs), np.float32)
    for r in range(rows):
        e = int(rng.integers(-125, 126))
        kind = r % 8
        if kind == 0:  # random magnitudes and signs within two binades of amax
            b = rng.standard_normal(bs) * np.exp2(rng.integers(-12, 1, bs))
        elif kind == 1:  # ties: (k + 1/2) · 2^-6 for k of both parities, both signs
            b = (rng.integers(-128, 127, bs) + 0.5) / 64
            b[0] = 127.5 / 64  # amax's binade is [1, 2): the scale is 2^e
        elif kind == 2:  # at and past ±max: 127/64, between 127/64 and 2, -2 and beside it
            b = rng.choice(np.array([127 / 64, 127.25 / 64, 127.5 / 64, 127.75 / 64, 2 - 2**-23, -2 + 2**-23, -127.5 / 64, -127.75 / 64,
                                     -128.25 / 64 + 2**-20, 1.0, -1.0]), bs)
        elif kind == 3:  # amax one ulp below a power of two: floor(log2) must not round up
            b = rng.uniform(-1, 1, bs)
            b[rng.integers(bs)] = 1 - 2**-24
        elif kind == 4:  # amax exactly a power of two
            b = rng.uniform(-1, 1, bs)
            b[rng.integers(bs)] = -1.0
        elif kind == 5:  # denormal blocks: the scale is 2^-127, elements x · 2^127
            bits = rng.integers(0, 0x80_0000, bs, dtype=np.uint32) | (rng.integers(0, 2, bs, dtype=np.uint32) << np.uint32(31))
            x[r] = bits.view(np.float32)
            continue
        elif kind == 6:  # all-zero blocks, ±0
            x[r] = np.where(rng.integers(0, 2, bs) == 1, np.float32(-0.0), np.float32(0.0))
            continue
        else:  # raw finite bit patterns: elements of every size under amax
            bits = rng.integers(0, 2**32, bs, dtype=np.uint64).astype(np.uint32) & np.uint32(0xFF7F_FFFF)
            x[r] = bits.view(np.float32)
            continue
        x[r] = (b * 2.0**e).astype(np.float32)
    return x


def as_bf16(x: np.ndarray) -> np.ndarray:
    return ref.f32_to_bf16_bits(x).view(ml_dtypes.bfloat16)


@pytest.fixture(scope="module")
def reference_ctx():
    mp = pytest.MonkeyPatch()
    mp.setenv("PIQUANT_BACKEND", "reference")
    ctx = piquant.Context(1)
    mp.undo()
    assert type(ctx._backend).__name__ == "ReferenceBackend"
    yield ctx
    ctx.close()


def _contexts(contexts, reference_ctx):
    yield "reference backend", reference_ctx
    for isa in ISAS:
        for threads in THREADS:
            yield f"{isa}, {threads} threads", contexts(isa, threads)


# (block size, rows of blocks): the default; 16 (AVX2's vector, AVX-512's half
# vector); 48 (no ISA's multiple: the batched path); 96 rows of 32 split over
# the pool's threads.
CASES = ((32, 96), (16, 64), (48, 40), (32, 1200))


@pytest.mark.parametrize("ftype", ("float32", "bfloat16"))
@pytest.mark.parametrize("bs,rows", CASES)
def test_quantize_matches_gfloat(rng, contexts, reference_ctx, ftype, bs, rows):
    x = blocks(rng, rows, bs).reshape(-1, 3 * bs) if rows % 3 == 0 else blocks(rng, rows, bs)
    if ftype == "bfloat16":
        x = as_bf16(x)
    assert np.isfinite(x.astype(np.float32)).all()
    want_codes, want_scales = oracle(x.astype(np.float32), bs)
    for where, ctx in _contexts(contexts, reference_ctx):
        m = pmx.quantize(x, "mxint8", block_size=bs, scale_mode="floor", ctx=ctx)
        assert m.data.dtype == np.int8
        np.testing.assert_array_equal(m.scales.reshape(-1), want_scales, err_msg=f"scales, {where}, {ftype}, block {bs}")
        np.testing.assert_array_equal(m.data.reshape(-1).view(np.uint8), want_codes, err_msg=f"codes, {where}, {ftype}, block {bs}")


def test_denormal_blocks_round_trip_at_their_scale(contexts, reference_ctx):
    """OCP's divisor 2^-127 (not torchao's 2^-126): a denormal block comes
    back at its own magnitude, not halved."""
    k = np.arange(1, 33)
    x = (k * 2.0**-132).astype(np.float32).reshape(1, 32)  # amax 2^-127: denormal
    for where, ctx in _contexts(contexts, reference_ctx):
        m = pmx.quantize(x, "mxint8", ctx=ctx)
        assert m.scales[0, 0] == 0, where
        np.testing.assert_array_equal(m.data.reshape(-1), 2 * k, err_msg=where)  # x / 2^-127 = 2k · 2^-6
        np.testing.assert_array_equal(pmx.dequantize(m, ctx=ctx), x, err_msg=where)


def decoded(codes: np.ndarray, scales: np.ndarray, bs: int) -> np.ndarray:
    """gfloat's decode_block of each (scale, codes) block, in float32 (its
    float64 products, at most 8 significant bits from 2^-133 up, are float32
    values but for -2 · 2^127, which overflows to -inf in both)."""
    fmt = gfloat.BlockFormatInfo("mxint8", INT8, bs, E8M0)
    c = codes.reshape(-1, bs)
    out = [list(gfloat.decode_block(fmt, [int(s), *map(int, row)])) for s, row in zip(scales, c)]
    with np.errstate(over="ignore"):
        return np.array(out, np.float64).astype(np.float32).reshape(-1)


def test_dequantize_matches_gfloat_for_every_scale_and_code(contexts, reference_ctx):
    """Every E8M0 scale (255: NaN) with every int8 code, bs = 256 so that
    each block holds all 256 codes, float32 and bfloat16 outputs."""
    codes = np.tile(np.arange(256, dtype=np.uint8), 256)
    scales = np.arange(256, dtype=np.uint8)
    want = decoded(codes, scales, 256)
    assert np.isnan(want[-256:]).all()
    m = pmx.MXArray(codes.view(np.int8).reshape(4, 64 * 256), scales.reshape(4, 64), "mxint8", (4, 64 * 256), 256)
    for where, ctx in _contexts(contexts, reference_ctx):
        got = pmx.dequantize(m, ctx=ctx)
        np.testing.assert_array_equal(got.reshape(-1), want, err_msg=where)
        got16 = pmx.dequantize(m, ml_dtypes.bfloat16, ctx=ctx)
        np.testing.assert_array_equal(got16.reshape(-1).view(np.uint16)[:-256], as_bf16(want[:-256]).view(np.uint16), err_msg=where)
        assert np.isnan(got16.reshape(-1)[-256:].astype(np.float32)).all(), where


def test_round_trip_matches_gfloat_quantize_block(rng, contexts, reference_ctx):
    """dequantize(quantize(x)) is gfloat's quantize_block(x) (encode, then
    decode) on the adversarial blocks."""
    x = blocks(rng, 64, 32)
    fmt = gfloat.formats.format_info_mxint8
    want = np.concatenate([gfloat.quantize_block(fmt, b.astype(np.float64), gfloat.compute_scale_amax) for b in x]).astype(np.float32)
    for where, ctx in _contexts(contexts, reference_ctx):
        got = pmx.dequantize(pmx.quantize(x, "mxint8", ctx=ctx), ctx=ctx)
        np.testing.assert_array_equal(got.reshape(-1), want, err_msg=where)
