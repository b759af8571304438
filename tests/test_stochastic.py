"""Stochastic rounding: unbiased per element, uniform u, seeds that matter,
results that depend on nothing but (seed, index). Bounds are set so that a
correct implementation fails with probability below 1e-6 per test."""

from __future__ import annotations

import math

import numpy as np
import pytest

import piquant
import piquant_reference as ref
from conftest import ISAS

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")

# Two-sided normal quantile for p = 1e-9: with up to ~1000 simultaneous
# checks per test, the family-wise false alarm rate stays below 1e-6.
Z = 6.1


@pytest.mark.parametrize("ftype,qtype", [("float32", "uint8"), ("float32", "int4"), ("float64", "int32"), ("bfloat16", "uint2")])
def test_mean_over_seeds_converges_to_x_per_element(rng, ftype, qtype):
    import ml_dtypes

    n, seeds = 1000, 400
    qmin, qmax = ref.qrange(qtype)
    scale = 0.125  # a power of two: x / scale is exact, so the target is x itself
    zp = (qmin + qmax + 1) // 2
    lo, hi = (qmin - zp + 1) * scale, (qmax - zp - 1) * scale  # inside the range: no clamping
    c = np.float64 if ftype == "float64" else np.float32
    x = rng.uniform(lo, hi, n).astype(c)
    if ftype == "bfloat16":
        x = x.astype(ml_dtypes.bfloat16)
    xf = x.astype(np.float64)
    total = np.zeros(n)
    for s in range(seeds):
        q = piquant.quantize(x, qtype, scale=scale, zero_point=zp, round_mode="stochastic", seed=s)
        total += q.dequantize(c).astype(np.float64)
    mean = total / seeds
    frac = xf / scale - np.floor(xf / scale)
    sigma = scale * np.sqrt(frac * (1 - frac) / seeds)
    # An element on the grid must never move; otherwise within Z sigma.
    err = np.abs(mean - xf)
    assert np.all(err[frac == 0] == 0)
    bad = err > Z * sigma + 1e-12
    assert not bad.any(), f"{bad.sum()} elements biased, worst {err[bad].max()} vs sigma {sigma[bad].min()}"
    # And over all elements together, the mean error is far tighter.
    pooled = np.sqrt(np.sum(sigma**2)) / n
    assert abs(np.mean(mean - xf)) <= Z * pooled


def test_probability_of_rounding_up_is_the_fraction():
    """The native kernel's P(u < f) at 63 fractions f = j/64 (the CDF of u)."""
    per = 20_000
    f = np.repeat(np.arange(1, 64) / 64, per).astype(np.float32)
    q = piquant.quantize(f, "uint8", scale=1.0, zero_point=0, round_mode="stochastic", seed=2024).data
    ups = q.reshape(63, per).mean(axis=1)
    p = np.arange(1, 64) / 64
    assert np.all(np.abs(ups - p) <= Z * np.sqrt(p * (1 - p) / per))


def chi_square_upper(df: int, z: float) -> float:
    """Wilson–Hilferty: the chi-square quantile at normal quantile z."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("c", [np.float32, np.float64])
def test_uniforms_are_uniform_and_uncorrelated(c):
    n, bins = 2_000_000, 1000
    for seed, start in ((0, 0), (987654321, 0), (7, 2**32 - n // 2), (2**64 - 1, 5 * 2**32)):
        u = ref.uniforms(seed, n, c, start=start)
        assert u.dtype == c and u.min() >= 0 and u.max() < 1
        counts = np.bincount((u * bins).astype(np.int64), minlength=bins)
        chi2 = np.sum((counts - n / bins) ** 2 / (n / bins))
        assert chi2 < chi_square_upper(bins - 1, Z), f"seed {seed}: chi2 {chi2}"
        # Kolmogorov–Smirnov distance against U(0, 1).
        s = np.sort(u)
        d = np.max(np.maximum(np.arange(1, n + 1) / n - s, s - np.arange(n) / n))
        assert d < math.sqrt(-math.log(1e-9 / 2) / (2 * n))
        # Pairs of neighbours (lags 1, 2, 64) fill a 64 × 64 grid evenly.
        for lag in (1, 2, 64):
            cells = (u[:-lag] * 64).astype(np.int64) * 64 + (u[lag:] * 64).astype(np.int64)
            pairs = np.bincount(cells, minlength=4096)
            expected = (n - lag) / 4096
            assert np.sum((pairs - expected) ** 2 / expected) < chi_square_upper(4095, Z), f"seed {seed} lag {lag}"
        # Neighbouring elements and the same element under another seed are uncorrelated.
        for a, b in ((u[:-1], u[1:]), (u, ref.uniforms((seed + 1) % 2**64, n, c, start=start))):
            r = np.corrcoef(a, b)[0, 1]
            assert abs(r) < Z / math.sqrt(n)


def test_seeds_reproduce_and_differ(rng):
    x = rng.standard_normal(10_000).astype(np.float32)
    kw = dict(scale=0.05, zero_point=128, round_mode="stochastic")
    a = piquant.quantize(x, "uint8", seed=1, **kw).data
    assert np.array_equal(a, piquant.quantize(x, "uint8", seed=1, **kw).data)
    b = piquant.quantize(x, "uint8", seed=2, **kw).data
    assert not np.array_equal(a, b)
    # Without a seed every call draws a fresh one.
    c1 = piquant.quantize(x, "uint8", **kw).data
    c2 = piquant.quantize(x, "uint8", **kw).data
    assert not np.array_equal(c1, c2)
    # Nearest ignores the seed.
    n1 = piquant.quantize(x, "uint8", scale=0.05, zero_point=128, seed=1).data
    assert np.array_equal(n1, piquant.quantize(x, "uint8", scale=0.05, zero_point=128, seed=2).data)


def test_result_does_not_depend_on_threads_or_isa(contexts, rng):
    x = rng.standard_normal(300_001).astype(np.float32)
    results = [
        piquant.quantize(x, "int4", scale=0.1, zero_point=0, round_mode="stochastic", seed=99, ctx=contexts(isa, t)).data
        for isa in ISAS
        for t in (1, 2, 3)
    ]
    for r in results[1:]:
        assert np.array_equal(r, results[0])
    assert np.array_equal(results[0], ref.quantize(x, "int4", 0.1, 0, round_mode="stochastic", seed=99))


def test_fake_quantize_stochastic_matches_round_trip(rng):
    x = rng.standard_normal(5000).astype(np.float32)
    q = piquant.quantize(x, "uint4", scale=0.3, zero_point=8, round_mode="stochastic", seed=5)
    f = piquant.fake_quantize(x, "uint4", scale=0.3, zero_point=8, round_mode="stochastic", seed=5)
    assert np.array_equal(f, q.dequantize())


@pytest.mark.parametrize("qtype,zp", [("uint8", 128), ("int8", 0), ("int16", 0), ("int4", 0)])
def test_fractions_at_each_elements_uniform_match_reference(contexts, rng, qtype, zp):
    # u < y - floor(y) is strict: plant y = k + u, its neighbours, and
    # y in (-1/2, 0) just above u - 1, where y - floor(y) = 1 + y rounds
    # (to u itself for some), on every variant and thread count.
    n, seed = 100_003, 31
    u = ref.uniforms(seed, n)
    k = rng.integers(-5, 6, n).astype(np.float32)
    at = k + u
    kind = rng.integers(0, 4, n)
    x = np.where(kind == 0, at, np.where(kind == 1, np.nextafter(at, np.float32(np.inf)), np.nextafter(at, np.float32(-np.inf))))
    near = (u - np.float32(1)).astype(np.float32)
    steps = rng.integers(1, 4, n)
    for s in range(1, 4):
        near = np.where(steps >= s, np.nextafter(near, np.float32(np.inf)), near)
    x = np.where((kind == 3) & (u >= 0.5), near, x).astype(np.float32)
    want = ref.quantize(x, qtype, 1.0, zp, round_mode="stochastic", seed=seed)
    with np.errstate(invalid="ignore"):
        assert np.count_nonzero(x - np.floor(x) == u) > n // 8  # the ties are there
    for isa in ISAS:
        for t in (1, 2, 3):
            got = piquant.quantize(x, qtype, scale=1.0, zero_point=zp, round_mode="stochastic", seed=seed, ctx=contexts(isa, t)).data
            assert np.array_equal(got, want), (isa, t, np.flatnonzero(got != want)[:5])
