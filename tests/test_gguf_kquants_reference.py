"""The reference's Q5_0, Q5_1, MXFP4 (piquant_reference.gguf) and K-quants
(piquant_reference.gguf_kquants) against llama.cpp's own C code, byte for
byte: ggml-python's ``ggml_quantize_chunk`` built without FMA contraction
(see .ci/run), on random and adversarial rows; dequantize bit for bit with
the `gguf` package and with ggml's ``to_float``.

ggml-python is skipped where it is missing unless PIQUANT_REQUIRE_TOOLS=1
(as in .ci/run), which makes its absence a failure."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf import quants  # noqa: E402

from piquant_reference import gguf as ref_gguf  # noqa: E402
from piquant_reference import gguf_kquants  # noqa: E402

LEGACY = ("Q5_0", "Q5_1", "MXFP4")  # blocks of 32
KQUANTS = ("Q4_K", "Q5_K", "Q6_K")


def module(fmt: str):
    return ref_gguf if fmt in LEGACY else gguf_kquants


def block(fmt: str) -> int:
    return 32 if fmt in LEGACY else 256


def block_bytes(fmt: str) -> int:
    """Bytes per block."""
    return ref_gguf.FORMATS[fmt] if fmt in LEGACY else gguf_kquants.FORMATS[fmt]


@pytest.fixture(scope="module")
def ggml():
    try:
        import ggml
    except ImportError:
        if os.environ.get("PIQUANT_REQUIRE_TOOLS"):
            pytest.fail("ggml-python is required (PIQUANT_REQUIRE_TOOLS is set) but not installed")
        pytest.skip("ggml-python is not installed")
    return ggml


def ggml_quantize(ggml, x: np.ndarray, fmt: str) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    rows, n = x.shape
    size = block_bytes(fmt)
    out = np.zeros(rows * n // block(fmt) * size, np.uint8)
    src = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    written = ggml.ggml_quantize_chunk(int(getattr(T, fmt)), src, out.ctypes.data_as(ctypes.c_void_p), 0, rows, n, None)
    assert written == out.size
    return out.reshape(-1, size)


def ggml_dequantize(ggml, blocks: np.ndarray, fmt: str) -> np.ndarray:
    n = blocks.size // block_bytes(fmt) * block(fmt)
    out = np.zeros(n, np.float32)
    to_float = ggml.ggml_get_type_traits(int(getattr(T, fmt))).contents.to_float
    to_float(np.ascontiguousarray(blocks).ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n)
    return out


def adversarial(rng, rows: int, n: int, sub: int, nonfinite: bool = False) -> np.ndarray:
    """Rows of n elements; each sub-block of `sub` elements (the format's
    smallest scale group) gets one of the hard cases (NaN and ±inf too if
    `nonfinite`: the K-quants follow llama.cpp's C there, Q5_0/Q5_1 the
    rules of Q4_0/Q4_1)."""
    x = (rng.standard_normal((rows, n)) * rng.choice([1e-3, 1.0, 1e3], (rows, 1))).astype(np.float32)
    blocks = x.reshape(-1, sub)
    for i, b in enumerate(blocks):
        case = i % (15 if nonfinite else 13)
        if case == 0:
            b[:] = 0                                       # all-zero
        elif case == 1:
            b[:] = 1.5                                     # constant
        elif case == 2:
            b[:] = -0.25
        elif case == 3:
            b[:] *= np.float32(1e-40) / np.abs(b).max()    # denormal-scaled
        elif case == 4:
            b[:] = np.float32(65504) * rng.choice([-1, 1], sub)  # float16's largest
        elif case == 5:
            b[rng.integers(sub)] = np.float32(1e6) * rng.choice([-1, 1])  # one huge outlier
        elif case == 6:
            b[:] = np.abs(b)                               # all positive: the min is clamped to 0
        elif case == 7:
            b[:] = -np.abs(b)
        elif case == 8:
            b[:] = np.arange(sub, dtype=np.float32) - (sub - 1) / 2  # halves: ties
        elif case == 9:
            b[:] *= np.float32(1e-7)                       # scales below float16's normal range
        elif case == 10:
            b[:] = np.where(rng.random(sub) < 0.5, np.float32(-2.0), np.float32(7.0))  # two values, mixed signs
        elif case == 11:
            b[rng.integers(sub)] = np.float32(3e38)         # its square and the sums overflow
        elif case == 13:
            b[rng.integers(sub)] = np.nan
        elif case == 14:
            b[rng.integers(sub, size=2)] = np.float32(np.inf) * rng.choice([-1, 1], 2)
        # case 12: plain random
    return x


CASES = [(fmt, n) for fmt in LEGACY for n in (32, 96, 1024)] + [(fmt, n) for fmt in KQUANTS for n in (256, 768, 2048)]


@pytest.mark.parametrize("fmt,n", CASES)
def test_bytes_match_llama_cpp(ggml, rng, fmt, n):
    sub = 32 if fmt in ("Q4_K", "Q5_K") else 16 if fmt == "Q6_K" else 32
    rows = max(1, 4096 // n)
    rows_of = [(rng.standard_normal((rows, n)) * 3).astype(np.float32), adversarial(rng, rows, n, sub, fmt in KQUANTS)]
    if fmt in KQUANTS:  # sparse, ±0 mixed: the K-quants follow llama.cpp's C there too
        rows_of.append((rng.standard_normal((rows, n)) * (rng.random((rows, n)) < 0.05)).astype(np.float32))
    for x in rows_of:
        ours = module(fmt).quantize(x, fmt)
        theirs = ggml_quantize(ggml, x, fmt)
        bad = np.argwhere(ours != theirs)
        # ggml-python built with FMA contraction (a default build) differs from the spec: see .ci/run.
        assert not bad.size, (fmt, n, bad[:4], "is ggml-python built with -ffp-contract=off?")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the gguf package's inf · 0
@pytest.mark.parametrize("fmt", LEGACY + KQUANTS)
def test_dequantize_matches_gguf_and_ggml_bit_for_bit(ggml, rng, fmt):
    ref = module(fmt)
    x = adversarial(rng, 4, 1024, 16 if fmt == "Q6_K" else 32)
    blocks = ggml_quantize(ggml, x, fmt)
    ours = ref.dequantize(blocks, fmt).view(np.uint32)
    assert np.array_equal(ours, quants.dequantize(blocks, getattr(T, fmt)).reshape(-1).view(np.uint32))
    assert np.array_equal(ours, ggml_dequantize(ggml, blocks, fmt).view(np.uint32))
    # Every bit pattern, with d and dmin finite (NaN payloads are not specified; E8M0 has no NaN here).
    noise = rng.integers(0, 256, (64, block_bytes(fmt)), dtype=np.uint16).astype(np.uint8)
    halves = {"Q6_K": slice(208, 210), "Q5_0": slice(0, 2), "MXFP4": slice(0, 0)}.get(fmt, slice(0, 4))
    h = noise[:, halves].copy().view(np.uint16)
    noise[:, halves] = (h & np.uint16(0xBFFF)).view(np.uint8)  # exponent below all-ones
    ours = ref.dequantize(noise, fmt).view(np.uint32)
    assert np.array_equal(ours, quants.dequantize(noise, getattr(T, fmt)).reshape(-1).view(np.uint32))
    assert np.array_equal(ours, ggml_dequantize(ggml, noise, fmt).view(np.uint32))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the gguf package's, on the adversarial blocks
@pytest.mark.parametrize("fmt", LEGACY)
def test_blocks_of_32_match_the_gguf_package(rng, fmt):
    x = adversarial(rng, 8, 256, 32)
    ours = ref_gguf.quantize(x, fmt)
    assert np.array_equal(ours, quants.quantize(x, getattr(T, fmt)).reshape(ours.shape))


@pytest.mark.parametrize("fmt", ("Q5_0", "Q5_1"))
def test_signed_zeros_differ_from_llama_cpp_only_as_the_spec_says(ggml, rng, fmt):
    """Sparse rows (x · 0 keeps the sign: ±0 mixed). llama.cpp's C starts
    Q5_0's largest magnitude from +0 and keeps Q5_1's first zero min; the
    spec (as for Q4_0/Q4_1) differs only in those sign bits of d and m."""
    x = (rng.standard_normal((64, 1024)) * (rng.random((64, 1024)) < 0.05)).astype(np.float32)
    b = x.reshape(-1, 32)
    ours, theirs = ref_gguf.quantize(x, fmt), ggml_quantize(ggml, x, fmt)
    zero = b == 0
    if fmt == "Q5_0":
        sign_byte, may_differ = 1, zero.all(axis=1) & np.signbit(b[:, 0])
    else:
        both = (zero & np.signbit(b)).any(axis=1) & (zero & ~np.signbit(b)).any(axis=1)
        sign_byte, may_differ = 3, both & (b.min(axis=1) == 0)
    differ = (ours != theirs).any(axis=1)
    assert differ.any() and not (differ & ~may_differ).any()
    ours[:, sign_byte] &= 0x7F
    theirs[:, sign_byte] &= 0x7F
    assert np.array_equal(ours, theirs)


def test_mxfp4_exponent_next_to_every_power_of_two(ggml):
    """floor(log2f(amax)) decides the exponent: amax just below 2^k can
    round up to k. The 128 floats on either side of every power of two."""
    k = np.arange(-149, 128)
    bits = np.ldexp(np.float32(1), k).astype(np.float32).view(np.int32)
    amax = (bits[:, None] + np.arange(-128, 129)).astype(np.int32).view(np.float32).reshape(-1)
    amax = amax[(amax > 0) & np.isfinite(amax)]
    x = np.zeros((len(amax), 32), np.float32)
    x[:, 0] = amax
    x[:, 9] = amax * np.float32(-0.3)
    ours = ref_gguf.quantize(x, "MXFP4")
    assert np.array_equal(ours, ggml_quantize(ggml, x, "MXFP4"))
    assert len(np.unique(ours[:, 0])) == 256  # every exponent byte, the wrapped ones of subnormals too


def test_row_lengths_and_names_are_checked():
    with pytest.raises(ValueError, match="multiple of the block size 256"):
        gguf_kquants.quantize(np.ones(288, np.float32), "Q4_K")
    with pytest.raises(ValueError, match="fmt"):
        gguf_kquants.quantize(np.ones(256, np.float32), "Q8_0")
    with pytest.raises(ValueError, match="fmt"):
        gguf_kquants.dequantize(np.zeros(144, np.uint8), "Q4_0")
