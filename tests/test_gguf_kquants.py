"""GGUF formats of issue 18 in the native kernels: Q4_K, Q5_K, Q6_K
(super-blocks of 256) and Q5_0, Q5_1, MXFP4 (blocks of 32) on every ISA
variant and thread count, byte for byte with piquant_reference and with
llama.cpp's C (ggml-python's ``ggml_quantize_chunk``, built without FMA
contraction); dequantize bit for bit with the reference and ``gguf.quants``.

ggml-python is skipped where it is missing unless PIQUANT_REQUIRE_TOOLS=1."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from test_gguf_kquants_reference import adversarial, ggml, ggml_quantize  # noqa: F401 (ggml: a fixture)

import piquant
import piquant_reference as ref
from conftest import ISAS, THREADS
from piquant_reference import gguf as ref_gguf
from piquant_reference import gguf_kquants

KQUANTS = tuple(gguf_kquants.FORMATS)
LEGACY = ("Q5_0", "Q5_1", "MXFP4")

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")


def spec(fmt: str):
    return gguf_kquants if fmt in KQUANTS else ref_gguf


def sub_block(fmt: str) -> int:
    return 16 if fmt == "Q6_K" else 32


def row_sets(rng, fmt: str, rows: int, n: int) -> list[tuple[np.ndarray, bool]]:
    """(rows, whether llama.cpp's C must agree): random, adversarial (NaN and
    ±inf too), and sparse rows whose zeros have both signs. For the blocks
    of 32 the spec departs from llama.cpp at NaN and signed zeros
    (docs/semantics.md), so those are compared with the reference only."""
    k = fmt in KQUANTS
    return [
        ((rng.standard_normal((rows, n)) * 3).astype(np.float32), True),
        (adversarial(rng, rows, n, sub_block(fmt), nonfinite=False), True),
        (adversarial(rng, rows, n, sub_block(fmt), nonfinite=True), k),
        ((rng.standard_normal((rows, n)) * (rng.random((rows, n)) < 0.05)).astype(np.float32), k),
    ]


# (rows, n): one super-block; a few rows; 3 × 98,560 elements, which the
# pool splits at multiples of 64 that are not multiples of 256.
SHAPES = [(1, 256), (3, 768), (385, 256)]


@pytest.mark.parametrize("fmt", KQUANTS + LEGACY)
def test_native_matches_reference_and_llama_cpp(contexts, ggml, rng, fmt):  # noqa: F811
    for rows, n in SHAPES:
        for x, with_ggml in row_sets(rng, fmt, rows, n):
            want = spec(fmt).quantize(x, fmt).reshape(rows, -1)
            if with_ggml:
                theirs = ggml_quantize(ggml, x, fmt).reshape(rows, -1)
                assert np.array_equal(want, theirs), (fmt, rows, n, "reference vs llama.cpp")
            back = spec(fmt).dequantize(want, fmt)
            for isa in ISAS:
                for threads in THREADS:
                    ctx = contexts(isa, threads)
                    got = piquant.gguf.quantize(x, fmt, ctx=ctx)
                    bad = np.argwhere(got != want)
                    assert not bad.size, (fmt, rows, n, isa, threads, bad[:4])
                    values = piquant.gguf.dequantize(got, fmt, ctx=ctx)
                    assert values.shape == x.shape
                    np.testing.assert_array_equal(values.reshape(-1).view(np.uint32), back.view(np.uint32), err_msg=f"{isa} {threads}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the gguf package's inf · 0
@pytest.mark.parametrize("fmt", KQUANTS + LEGACY)
def test_dequantize_matches_the_gguf_package(contexts, rng, fmt):
    """Every bit pattern of the blocks, with float16 d and dmin finite (NaN
    payloads are not specified)."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    size = spec(fmt).FORMATS[fmt]
    blocks = rng.integers(0, 256, (301, size), dtype=np.uint16).astype(np.uint8)
    halves = {"Q6_K": slice(208, 210), "Q5_0": slice(0, 2), "MXFP4": slice(0, 0)}.get(fmt, slice(0, 4))
    h = blocks[:, halves].copy().view(np.uint16)
    blocks[:, halves] = (h & np.uint16(0xBFFF)).view(np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        want = quants.dequantize(blocks, getattr(T, fmt)).reshape(-1)
    np.testing.assert_array_equal(spec(fmt).dequantize(blocks, fmt).view(np.uint32), want.view(np.uint32))
    for isa in ISAS:
        for threads in THREADS:
            got = piquant.gguf.dequantize(blocks, fmt, ctx=contexts(isa, threads)).reshape(-1)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{isa} {threads}")


NP_FLOAT = {"float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


@pytest.mark.parametrize("ftype", tuple(NP_FLOAT))
@pytest.mark.parametrize("fmt", KQUANTS)
def test_other_float_types(contexts, rng, fmt, ftype):
    """float16 and bfloat16 widened, float64 rounded to float32 first; the
    values written back in each type."""
    x32 = adversarial(rng, 5, 512, sub_block(fmt), nonfinite=True)
    if ftype == "bfloat16":
        x = ref.f32_to_bf16_bits(x32).view(ml_dtypes.bfloat16)
    else:
        with np.errstate(over="ignore"):
            x = x32.astype(NP_FLOAT[ftype])
    if ftype == "float64":
        x = x + rng.standard_normal(x.shape) * 1e-9
    want = gguf_kquants.quantize(x, fmt).reshape(5, -1)
    back = gguf_kquants.dequantize(want, fmt).reshape(5, 512)
    with np.errstate(over="ignore"):
        narrowed = ref.f32_to_bf16_bits(back) if ftype == "bfloat16" else back.astype(NP_FLOAT[ftype])
    for isa in ISAS:
        ctx = contexts(isa, 2)
        got = piquant.gguf.quantize(x, fmt, ctx=ctx)
        np.testing.assert_array_equal(got, want, err_msg=isa)
        values = piquant.gguf.dequantize(got, fmt, dtype=NP_FLOAT[ftype], ctx=ctx)
        assert values.dtype == NP_FLOAT[ftype]
        np.testing.assert_array_equal(np.ascontiguousarray(values).view(np.uint8), np.ascontiguousarray(narrowed).view(np.uint8))


@pytest.mark.parametrize("fmt", KQUANTS)
def test_large_outputs_stream_and_still_match(contexts, rng, fmt):
    """8 MiB and more of float32 output are written with streaming stores,
    from any alignment."""
    x = (rng.standard_normal((9000, 256)) * 2).astype(np.float32)  # 9.2 MB of float32
    data = gguf_kquants.quantize(x, fmt)
    want = gguf_kquants.dequantize(data, fmt)
    for isa in ISAS:
        for threads in (1, 3):
            buf = np.zeros(x.size + 1, np.float32)
            out = buf[1:]
            piquant.gguf.dequantize(data.reshape(-1), fmt, out=out, ctx=contexts(isa, threads))
            np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32), err_msg=f"{isa} {threads}")
            assert buf[0] == 0


def test_rows_must_be_whole_super_blocks(contexts):
    with pytest.raises(ValueError, match="x: the last axis has 288 elements; Q4_K blocks need a multiple of 256"):
        piquant.gguf.quantize(np.ones((2, 288), np.float32), "Q4_K")
    with pytest.raises(ValueError, match="not a whole number of 210-byte blocks"):
        piquant.gguf.dequantize(np.zeros(200, np.uint8), "Q6_K")
    assert piquant.gguf.block_size("q5_k") == 256 and piquant.gguf.block_bytes(14) == 210
    assert piquant.gguf.block_size("MXFP4") == 32 and piquant.gguf.block_bytes("Q5_1") == 24

    from piquant import _backend

    lib = _backend.library()
    ctx = contexts(ISAS[0], 1)._backend._ctx
    x = np.ones(512, np.float32)
    out = np.empty(512, np.uint8)
    assert lib.piquant_gguf_quantize(ctx, x.ctypes.data, 0, out.ctypes.data, 12, 288) == 1
    assert lib.piquant_last_error().decode() == "numel: 288 is not a multiple of the block size 256"
    assert lib.piquant_gguf_dequantize(ctx, out.ctypes.data, 14, x.ctypes.data, 0, 160) == 1
    assert lib.piquant_gguf_quantize(ctx, x.ctypes.data, 0, out.ctypes.data, 39, 32) == 0
    assert [lib.piquant_gguf_block_bytes(t) for t in (6, 7, 12, 13, 14, 39)] == [22, 24, 144, 176, 210, 17]


def test_reference_backend_runs_the_new_formats(rng, monkeypatch):
    """The pure-numpy fallback backend serves the same calls."""
    monkeypatch.setenv("PIQUANT_BACKEND", "reference")
    ctx = piquant.Context(1)
    assert type(ctx._backend).__name__ == "ReferenceBackend"
    x = adversarial(rng, 2, 512, 16, nonfinite=True)
    for fmt in KQUANTS + LEGACY:
        got = piquant.gguf.quantize(x, fmt, ctx=ctx)
        np.testing.assert_array_equal(got, spec(fmt).quantize(x, fmt).reshape(2, -1))
        np.testing.assert_array_equal(piquant.gguf.dequantize(got, fmt, ctx=ctx).reshape(-1).view(np.uint32),
                                      spec(fmt).dequantize(got, fmt).view(np.uint32))
