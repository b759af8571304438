"""Property-based differential tests: hypothesis draws dtype pairs, shapes
(strided views included), scales from tiny to huge, zero points over the
whole range, rounding modes, seeds, ISA variants and thread counts; native
results must equal the reference's bit for bit."""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import piquant
import piquant_reference as ref
from conftest import ISAS, as_bytes, random_quantized

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")

NP_FLOAT = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
PROFILE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_contexts: dict[tuple[str, int], piquant.Context] = {}


def context(isa: str, threads: int) -> piquant.Context:
    if (isa, threads) not in _contexts:
        _contexts[(isa, threads)] = piquant.Context(threads, isa=isa)
    return _contexts[(isa, threads)]


@st.composite
def cases(draw):
    ftype = draw(st.sampled_from(ref.FLOAT_DTYPES))
    qtype = draw(st.sampled_from(ref.QUANTIZED_DTYPES))
    qmin, qmax = ref.qrange(qtype)
    zp = draw(st.one_of(st.sampled_from([qmin, qmax, 0 if qmin < 0 else qmin]), st.integers(qmin, qmax)))
    # Scales whose reciprocal is finite in the compute precision.
    exp_range = 1000 if ftype == "float64" else 120
    scale = draw(st.floats(0.5, 1.0)) * 2.0 ** draw(st.integers(-exp_range, exp_range))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=ndim, max_size=ndim)))
    if draw(st.integers(0, 9)) == 0:  # now and then large enough to split over threads
        shape = (draw(st.integers(32_768, 80_000)),)
    n = int(np.prod(shape))
    seed = draw(st.integers(0, 2**64 - 1))
    data_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(data_seed)
    c = np.float64 if ftype == "float64" else np.float32
    # Values around the grid of this scale and zero point, plus random bit patterns.
    steps = rng.standard_normal(n) * float(draw(st.sampled_from([1, 30, 1e3, 1e12, 1e30])))
    with np.errstate(over="ignore", invalid="ignore"):
        x = (steps * scale).astype(c)
        x = np.where(rng.random(n) < 0.2, ((np.round(steps) + 0.5) * scale).astype(c), x)
    if ftype == "bfloat16":
        x = ref.f32_to_bf16_bits(x).view(ml_dtypes.bfloat16)
    else:
        with np.errstate(over="ignore"):
            x = x.astype(NP_FLOAT[ftype])
    if n:
        bits = rng.integers(0, 2**63, max(1, n // 8), dtype=np.uint64).astype(np.dtype(f"u{x.dtype.itemsize}"))
        x.view(bits.dtype)[rng.integers(0, n, bits.size)] = bits
    x = x.reshape(shape)
    if ndim >= 1 and shape[0] > 1 and draw(st.booleans()):
        x = x[::2]  # a strided view: the API copies it
    return dict(
        ftype=ftype,
        qtype=qtype,
        zp=zp,
        scale=scale,
        x=x,
        seed=seed,
        mode=draw(st.sampled_from(["nearest", "stochastic"])),
        reduce=draw(st.sampled_from(["set", "add"])),
        isa=draw(st.sampled_from(ISAS)),
        threads=draw(st.sampled_from([1, 2, 3])),
        rng=rng,
    )


@PROFILE
@given(cases())
def test_quantize_and_fake_quantize(case):
    x, qtype, scale, zp = case["x"], case["qtype"], case["scale"], case["zp"]
    ctx = context(case["isa"], case["threads"])
    kw = dict(round_mode=case["mode"], seed=case["seed"])
    got = piquant.quantize(x, qtype, scale=scale, zero_point=zp, ctx=ctx, **kw)
    want = ref.quantize(np.ascontiguousarray(x), qtype, scale, zp, **kw)
    assert np.array_equal(as_bytes(got.data), as_bytes(want))
    assert got.shape == x.shape
    start = case["rng"].standard_normal(x.shape).astype(x.dtype)
    out, want_out = start.copy(), start.copy()
    piquant.fake_quantize(x, qtype, scale=scale, zero_point=zp, reduce=case["reduce"], out=out, ctx=ctx, **kw)
    ref.fake_quantize(np.ascontiguousarray(x), qtype, scale, zp, out=want_out, reduce=case["reduce"], **kw)
    assert np.array_equal(as_bytes(out), as_bytes(want_out))


@PROFILE
@given(cases())
def test_dequantize(case):
    qtype, ftype, n = case["qtype"], case["ftype"], case["x"].size
    data = random_quantized(case["rng"], n, qtype)
    start = case["x"].reshape(-1).copy()
    out, want = start.copy(), start.copy()
    piquant.dequantize(data, NP_FLOAT[ftype], scale=case["scale"], zero_point=case["zp"], qdtype=qtype, shape=(n,),
                       reduce=case["reduce"], out=out, ctx=context(case["isa"], case["threads"]))
    ref.dequantize(data, qtype, case["scale"], case["zp"], numel=n, out_dtype=ftype, out=want, reduce=case["reduce"])
    assert np.array_equal(as_bytes(out), as_bytes(want))


@PROFILE
@given(cases(), st.booleans())
def test_compute_params(case, symmetric):
    x = np.ascontiguousarray(case["x"])
    ctx = context(case["isa"], case["threads"])
    try:
        want = ref.compute_params(x, case["qtype"], symmetric)
    except ValueError as e:
        with pytest.raises(ValueError, match=re.escape(str(e)[:20])):
            piquant.compute_params(x, case["qtype"], symmetric=symmetric, ctx=ctx)
        return
    got = piquant.compute_params(x, case["qtype"], symmetric=symmetric, ctx=ctx)
    assert (got.scale, got.zero_point) == (float(want.scale), want.zero_point)
