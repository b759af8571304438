"""Per-channel (axis=) and per-group (group_size=) parameters: native vs
piquant_reference bit for bit on every ISA variant and thread count, with
shapes whose channels and groups straddle vector blocks and thread chunks;
the Python API's grouping rules and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import piquant
import piquant_reference as ref
from conftest import ISAS, NP_FLOAT, THREADS, as_bytes, in_float_type, random_quantized

# (shape, grouping). Sizes above 32,768 are split over threads at multiples
# of 64 elements, which fall inside channels and groups here.
LAYOUTS = [
    ((3, 20011), {"axis": 0}),  # odd runs: blocks span two channels
    ((601, 67), {"axis": 1}),  # inner 1: every lane its own set
    ((40, 9, 130), {"axis": 1}),
    ((40, 9, 130), {"axis": -1}),
    ((700, 64), {"group_size": 32}),
    ((90, 384), {"group_size": 128}),
    ((37, 51), {"group_size": 3}),  # odd groups: packed bytes hold two groups
    # Runs shorter than a block, a power of two (lanes spread from consecutive sets):
    ((600, 64), {"group_size": 8}),
    ((70, 6, 2), {"axis": 1}),  # inner 2, blocks wrap past the last channel
    ((520, 68), {"group_size": 4}),
    ((700, 64), {"axis": -1}),  # inner 1, channels a whole number of blocks
    ((40, 1000), {"axis": -1}),  # inner 1, rows wrapping inside blocks: every set prepared once per call
    ((26, 2048), {"axis": -1}),  # inner 1, too many sets for that: windows of sets
    ((9, 4, 1021), {"axis": 1}),  # odd runs; compute_params split by rows (2 threads) or by sets (3)
    ((5,), {"axis": 0}),
    ((2, 3, 0), {"axis": 1}),
]
LAYOUT_IDS = [f"{s}-{next(iter(g))}={next(iter(g.values()))}" for s, g in LAYOUTS]

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")


def set_params(rng, count: int, ftype: str, qtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-set scales (powers of two, which keep planted ties exact, and
    others) and zero points (the range's ends as often as inside values)."""
    scales = np.where(rng.random(count) < 0.5, 2.0 ** rng.integers(-10, 4, count), rng.uniform(1e-3, 2.0, count))
    if ftype != "float64":
        scales = scales.astype(np.float32).astype(np.float64)
    lo, hi = ref.qrange(qtype)
    zdt = np.uint64 if qtype == "uint64" else np.int64
    inside = rng.integers(lo, hi, count, endpoint=True, dtype=zdt)
    which = rng.integers(0, 3, count)
    zps = np.where(which == 0, zdt(lo), np.where(which == 1, zdt(hi), inside)).astype(zdt)
    return scales, zps


def grouped_input(rng, shape, lay, ftype: str, qtype: str, scales, zps) -> np.ndarray:
    """Values in each element's own grid: planted ties, saturation edges of
    its set, specials (±0, ±inf, NaN, denormals, huge) and random bits."""
    n = math.prod(shape)
    c = np.float64 if ftype == "float64" else np.float32
    idx = (np.arange(n) // lay[1]) % lay[0] if n else np.zeros(0, np.int64)
    s = scales[idx]
    qmin, qmax = ref.qrange(qtype)
    low_edge = np.array([float(qmin - int(z)) for z in zps])[idx]
    high_edge = np.array([float(qmax - int(z)) for z in zps])[idx]
    units = np.where(rng.random(n) < 0.3, rng.integers(-300, 300, n) + 0.5, rng.standard_normal(n) * 40)
    d = rng.choice([-2, -1, -0.5, 0, 0.5, 1, 2], n)
    pick = rng.random(n)
    units = np.where(pick < 0.08, low_edge + d, np.where(pick < 0.16, high_edge + d, units))
    with np.errstate(over="ignore"):
        x = (units * s).astype(c)
        special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-45, 3e38, -3e38, 1e9], c)
    m = n // 20
    x[rng.integers(0, max(n, 1), m)] = rng.choice(special, m)
    return in_float_type(x, ftype, rng).reshape(shape)


def layout_of(shape, grouping) -> tuple[int, int, tuple[int, ...]]:
    count, inner, pshape = ref.layout(shape, **grouping)
    return count, inner, pshape


@pytest.mark.parametrize("ftype", ref.FLOAT_DTYPES)
@pytest.mark.parametrize("qtype", ref.QUANTIZED_DTYPES)
@pytest.mark.parametrize("shape,grouping", LAYOUTS, ids=LAYOUT_IDS)
def test_grouped_ops_match_reference(contexts, rng, shape, grouping, ftype, qtype):
    lay = layout_of(shape, grouping)
    scales, zps = set_params(rng, lay[0], ftype, qtype)
    pscales, pzps = scales.reshape(lay[2]), zps.reshape(lay[2])
    x = grouped_input(rng, shape, lay, ftype, qtype, scales, zps)
    n = x.size
    seed = int(rng.integers(0, 2**63))
    stored = random_quantized(rng, n, qtype)
    start = grouped_input(rng, shape, lay, ftype, "uint8", np.full(lay[0], 0.5), np.zeros(lay[0], np.int64))
    want = {
        "nearest": ref.quantize(x, qtype, scales, zps, **grouping),
        "stochastic": ref.quantize(x, qtype, scales, zps, round_mode="stochastic", seed=seed, **grouping),
    }
    deq = {}
    for reduce in ("set", "add"):
        out = start.copy()
        ref.dequantize(stored, qtype, scales, zps, numel=n, out_dtype=ftype, out=out, reduce=reduce, shape=shape, **grouping)
        deq[reduce] = out
    fake_add = start.copy()
    ref.fake_quantize(x, qtype, scales, zps, round_mode="stochastic", seed=seed, out=fake_add, reduce="add", **grouping)
    fake_set = ref.fake_quantize(x, qtype, scales, zps, **grouping)

    for isa in ISAS:
        for threads in THREADS:
            ctx = contexts(isa, threads)
            where = f"{isa} threads={threads}"
            for mode, expected in want.items():
                got = piquant.quantize(x, qtype, scale=pscales, zero_point=pzps, round_mode=mode, seed=seed, ctx=ctx, **grouping)
                np.testing.assert_array_equal(as_bytes(got.data), as_bytes(expected), err_msg=f"quantize {mode} {where}")
            for reduce, expected in deq.items():
                out = start.copy()
                piquant.dequantize(stored, scale=pscales, zero_point=pzps, qdtype=qtype, shape=shape, reduce=reduce, out=out, ctx=ctx, **grouping)
                np.testing.assert_array_equal(as_bytes(out), as_bytes(expected), err_msg=f"dequantize {reduce} {where}")
            out = start.copy()
            piquant.fake_quantize(x, qtype, scale=pscales, zero_point=pzps, round_mode="stochastic", seed=seed, reduce="add", out=out, ctx=ctx, **grouping)
            np.testing.assert_array_equal(as_bytes(out), as_bytes(fake_add), err_msg=f"fake_quantize add {where}")
            got = piquant.fake_quantize(x, qtype, scale=pscales, zero_point=pzps, ctx=ctx, **grouping)
            np.testing.assert_array_equal(as_bytes(got), as_bytes(fake_set), err_msg=f"fake_quantize {where}")


@pytest.mark.parametrize("symmetric", (False, True))
@pytest.mark.parametrize("ftype", ref.FLOAT_DTYPES)
@pytest.mark.parametrize("shape,grouping", LAYOUTS, ids=LAYOUT_IDS)
def test_grouped_compute_params_match_reference(contexts, rng, shape, grouping, ftype, symmetric):
    n = math.prod(shape)
    lay = layout_of(shape, grouping)
    # Each set its own offset and spread, so sets differ; some NaN, and one
    # set of only NaN (its range is {0}).
    idx = (np.arange(n) // lay[1]) % lay[0] if n else np.zeros(0, np.int64)
    spread = rng.choice([1e-30, 1e-3, 1.0, 1e4], max(lay[0], 1))[idx]
    offset = rng.choice([-5.0, 0.0, 5.0], max(lay[0], 1))[idx]
    x = rng.standard_normal(n) * spread + offset
    x[rng.integers(0, max(n, 1), n // 50)] = np.nan
    if n:
        x[idx == 0] = np.nan
        x[idx == lay[0] // 2] = -2.5  # all equal (when not set 0)
        x[idx == lay[0] - 1] = 1e-40  # all equal, denormal in float32
    x = x.astype(NP_FLOAT[ftype]).reshape(shape)
    for qtype in ("uint8", "int4", "int8", "int16", "int32", "uint64", "float8_e4m3fn"):
        want = ref.compute_params(x, qtype, symmetric, **grouping)
        for isa in ISAS:
            for threads in THREADS:
                got = piquant.compute_params(x, qtype, symmetric=symmetric, ctx=contexts(isa, threads), **grouping)
                assert got.scale.dtype == want.scale.dtype and got.zero_point.dtype == want.zero_point.dtype
                np.testing.assert_array_equal(got.scale, want.scale, err_msg=f"{qtype} {isa} {threads}")
                np.testing.assert_array_equal(got.zero_point, want.zero_point, err_msg=f"{qtype} {isa} {threads}")


@pytest.mark.parametrize("shape,grouping", [((40, 1000), {"axis": -1}), ((3, 20011), {"axis": 0}), ((600, 64), {"group_size": 8}), ((26, 2048), {"axis": -1})])
def test_grouped_compute_params_name_the_first_set_without_params(contexts, rng, shape, grouping):
    """Sets with an infinite value, or whose range overflows float32: the
    error names the first of them (as the reference does), whatever the
    split over threads."""
    count, inner, _ = layout_of(shape, grouping)
    n = math.prod(shape)
    members = (np.arange(n) // inner) % count
    infinite = ({count - 1: (0.0, np.inf), count // 2: (-np.inf, 0.0)}, f"x: set {count // 2} contains an infinite value")
    overflow = ({count - 2: (-2e38, 2e38), count // 3: (-3e38, 3e38)}, rf"x: the range \(max - min\) of set {count // 3} overflows float32")
    for sets, message in (infinite, overflow):
        x = rng.standard_normal(n).astype(np.float32)
        for k, (lo, hi) in sets.items():
            at = np.flatnonzero(members == k)
            x[at[0]], x[at[-1]] = lo, hi
        x = x.reshape(shape)
        with pytest.raises(ValueError, match=message):
            ref.compute_params(x, "uint8", **grouping)
        for isa in ISAS:
            for threads in THREADS:
                with pytest.raises(ValueError, match=message):
                    piquant.compute_params(x, "uint8", ctx=contexts(isa, threads), **grouping)


def test_round_trip_carries_grouping(rng):
    x = rng.standard_normal((6, 256)).astype(np.float32)
    for grouping, pshape in (({"axis": 0}, (6,)), ({"axis": -1}, (256,)), ({"group_size": 64}, (6, 4))):
        q = piquant.quantize(x, "int4", symmetric=True, **grouping)
        assert q.scale.shape == pshape and q.zero_point.shape == pshape and q.scale.dtype == np.float32
        assert (q.axis, q.group_size) == (1 if grouping.get("axis") == -1 else grouping.get("axis"), grouping.get("group_size"))
        back = q.dequantize()
        assert back.shape == x.shape
        # Within half a step of each element's own set.
        p = ref.compute_params(x, "int4", True, **grouping)
        count, inner, _ = ref.layout(x.shape, **grouping)
        step = p.scale.reshape(-1)[(np.arange(x.size) // inner) % count].reshape(x.shape)
        assert np.all(np.abs(back - x) <= step / 2 * (1 + 1e-5))
        assert np.array_equal(piquant.dequantize(q.data, scale=q.scale, zero_point=q.zero_point, qdtype="int4", shape=x.shape, **grouping), back)


def test_group_wise_beats_per_tensor_on_outlier_rows(rng):
    x = rng.standard_normal((64, 512)).astype(np.float32)
    x[0] *= 1000  # one outlier row ruins a per-tensor scale
    err_tensor = np.abs(piquant.fake_quantize(x, "int4") - x)[1:].mean()
    err_group = np.abs(piquant.fake_quantize(x, "int4", group_size=32) - x)[1:].mean()
    assert err_group < err_tensor / 5


def test_packed_groups_stay_byte_aligned(rng):
    x = rng.standard_normal((3, 64)).astype(np.float32)
    q = piquant.quantize(x, "uint4", group_size=32)
    assert q.data.shape == (96,)  # 192 nibbles, each group its own 16 bytes
    for g in range(6):
        part = piquant.quantize(x.reshape(-1)[32 * g : 32 * g + 32], "uint4", scale=float(q.scale.reshape(-1)[g]), zero_point=int(q.zero_point.reshape(-1)[g]))
        assert np.array_equal(q.data[16 * g : 16 * g + 16], part.data)


def test_torch_tensors_give_torch_params_and_out_is_written():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 96)
    out = torch.empty(4, 96, dtype=torch.int8)
    q = piquant.quantize(x, "int8", axis=0, symmetric=True, out=out)
    assert q.data is out and isinstance(q.scale, torch.Tensor) and q.scale.dtype == torch.float32 and q.zero_point.dtype == torch.int64
    p = piquant.compute_params(x, "int8", symmetric=True, group_size=32)
    assert isinstance(p.scale, torch.Tensor) and tuple(p.scale.shape) == (4, 3)
    y = piquant.fake_quantize(x, "int8", scale=p.scale, zero_point=p.zero_point, group_size=32)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape


def test_uint64_zero_points_keep_their_type(rng):
    x = rng.standard_normal((4, 8))
    q = piquant.quantize(x, "uint64", axis=0, symmetric=True)
    assert q.zero_point.dtype == np.uint64 and q.zero_point[0] == 2**63
    expected = ref.dequantize(q.data, "uint64", q.scale, q.zero_point, out_dtype="float64", shape=(4, 8), axis=0).reshape(4, 8)
    assert np.array_equal(piquant.dequantize(q, np.float64), expected)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"group_size": 5}, ValueError, r"group_size: the last axis has 64 elements, which is not a multiple of group_size=5"),
        ({"group_size": 0}, ValueError, "group_size: expected a positive integer"),
        ({"group_size": 2.0}, TypeError, "group_size: expected an integer"),
        ({"axis": 2}, ValueError, r"axis: expected an axis of a 2-d array \(from -2 to 1\), got 2"),
        ({"axis": 0, "group_size": 32}, ValueError, "give one of them, not both"),
        ({"axis": 0, "scale": np.ones(3), "zero_point": np.zeros(4, np.int64)}, ValueError, r"scale: expected shape \(4,\)"),
        ({"axis": 0, "scale": np.array([1.0, 1, -1, 1]), "zero_point": np.zeros(4, np.int64)}, ValueError, r"scale\[2\]: expected a finite number > 0"),
        ({"axis": 0, "scale": np.array([1.0, 1, 1e-45, 1]), "zero_point": np.zeros(4, np.int64)}, ValueError, r"scale\[2\]: .*reciprocal is finite in float32"),
        ({"axis": 0, "scale": np.ones(4), "zero_point": np.array([0, 300, 0, 0])}, ValueError, r"zero_point\[1\]: expected an integer in \[0, 255\]"),
        ({"axis": 0, "scale": np.ones(4), "zero_point": np.zeros(4)}, TypeError, "zero_point: expected integers"),
        ({"axis": 0, "scale": 1.0, "zero_point": np.zeros(4, np.int64)}, TypeError, "scale: with axis= or group_size=, expected an array"),
        ({"axis": 0, "scale": np.ones(4)}, ValueError, "scale, zero_point: give both"),
    ],
)
def test_bad_grouping_arguments_are_named(rng, kwargs, exc, match):
    x = rng.standard_normal((4, 64)).astype(np.float32)
    with pytest.raises(exc, match=match):
        piquant.quantize(x, "uint8", **kwargs)


def test_parameter_arrays_of_numpy_subclasses_are_used_as_plain_arrays(rng, tmp_path):
    """A memmap of scales (an ndarray subclass) is read as the array it is."""
    x = rng.standard_normal((4, 64)).astype(np.float32)
    s, z = piquant.compute_params(x, "uint8", axis=0)
    mapped = np.memmap(tmp_path / "scales", np.float64, "w+", shape=(4,))
    mapped[:] = s
    out = np.empty((4, 64), np.uint8)
    q = piquant.quantize(x, "uint8", scale=mapped, zero_point=z, axis=0, out=out)
    assert type(q.scale) is np.ndarray
    np.testing.assert_array_equal(out, piquant.quantize(x, "uint8", scale=s, zero_point=z, axis=0).data)


def test_c_abi_checks_every_set(contexts):
    """The grouped C calls check the layout and name the bad set."""
    import ctypes

    from piquant import _backend, _native

    lib = _backend.library()
    ctx = contexts(ISAS[0], 1)._backend._ctx
    x = np.ones(8, np.float32)
    out = np.empty(8, np.uint8)
    scales = np.array([1.0, 0.0])
    zps = np.zeros(2, np.int64)

    def call(count: int, inner: int, params=True, scale_type: int = 3) -> tuple[int, str]:
        g = _native.GroupParams(scales.ctypes.data, zps.ctypes.data, count, inner, scale_type)
        status = lib.piquant_quantize_grouped(ctx, x.ctypes.data, 0, out.ctypes.data, 20, 8, ctypes.byref(g) if params else None, 0, 0)
        return status, lib.piquant_last_error().decode()

    assert call(2, 4, params=False) == (1, "params: expected a pointer, got NULL")
    assert call(3, 1)[1] == "numel: 8 is not a multiple of count * inner = 3"
    assert call(0, 1)[1] == "params: count and inner must be at least 1, got 0 and 1"
    assert call(2, 4, scale_type=20) == (2, "params.scale_type: expected F32 or F64, got 20")
    status, msg = call(2, 4)
    assert status == 3 and msg.startswith("params.scales[1]: expected a finite number > 0")
    scales[1] = 1.0
    assert call(2, 4) == (0, call(2, 4)[1])


@pytest.mark.parametrize("symmetric", (False, True))
@pytest.mark.parametrize(
    "qtype,tdtype,qrange", [("uint4", "uint8", (0, 15)), ("int4", "int8", (-8, 7)), ("uint8", "uint8", (0, 255)), ("int8", "int8", (-128, 127))]
)
@pytest.mark.parametrize("group_size", (32, 128))
def test_group_wise_matches_torchao(rng, symmetric, qtype, tdtype, qrange, group_size):
    """torchao's choose_qparams_affine / quantize_affine / dequantize_affine
    with block size (1, g): the same parameters, integers and values."""
    torch = pytest.importorskip("torch")
    qp = pytest.importorskip("torchao.quantization.quant_primitives")
    x = torch.from_numpy((rng.standard_normal((64, 256)) * rng.uniform(0.01, 5, (64, 1)) + rng.uniform(-1, 1, (1, 256))).astype(np.float32))
    mapping = qp.MappingType.SYMMETRIC if symmetric else qp.MappingType.ASYMMETRIC
    block, td = (1, group_size), getattr(torch, tdtype)
    scale, zp = qp.choose_qparams_affine(x, mapping, block, td, *qrange, eps=torch.finfo(torch.float32).eps)
    p = piquant.compute_params(x, qtype, symmetric=symmetric, group_size=group_size)
    assert torch.equal(p.scale, scale) and torch.equal(p.zero_point, zp.long())
    theirs = qp.quantize_affine(x, block, scale, zp, td, *qrange)
    ours = piquant.quantize(x, qtype, scale=p.scale, zero_point=p.zero_point, group_size=group_size)
    values = ours.data.numpy() if ref.bits(qtype) == 8 else ref.unpack_bits(ours.data.numpy(), x.numel(), 4, qtype.startswith("i"))
    assert np.array_equal(values.reshape(-1), theirs.numpy().reshape(-1).astype(np.int64))
    assert torch.equal(piquant.dequantize(ours), qp.dequantize_affine(theirs, block, scale, zp, td, *qrange))


@pytest.mark.parametrize("threads", THREADS)
def test_many_sets_are_all_checked(contexts, rng, threads):
    """Above 32,768 sets the check is split over the pool: a bad set late in
    the array is still found, named, and nothing is written."""
    x = rng.standard_normal((3, 40_000)).astype(np.float32)
    p = piquant.compute_params(x, "int8", group_size=2)
    scale = p.scale.copy()
    scale.reshape(-1)[59_999] = np.nan
    out = np.full(x.shape, 7, np.int8)
    with pytest.raises(ValueError, match=r"scale\[59999\]: expected a finite number > 0"):
        piquant.quantize(x, "int8", scale=scale, zero_point=p.zero_point, group_size=2, out=out, ctx=contexts(ISAS[-1], threads))
    assert np.all(out == 7)
    zp = p.zero_point.copy()
    zp.reshape(-1)[40_001] = 300
    with pytest.raises(ValueError, match=r"zero_point\[40001\]: expected an integer in \[-128, 127\]"):
        piquant.quantize(x, "int8", scale=p.scale, zero_point=zp, group_size=2, out=out, ctx=contexts(ISAS[-1], threads))
    assert np.all(out == 7)


@pytest.mark.parametrize("ftype", ("float32", "float64"))
def test_subnormal_scales_with_finite_reciprocals_are_accepted(contexts, ftype):
    """The one-pass check and the per-set check agree at the edge: the
    smallest scale whose reciprocal is finite is subnormal (found by fuzzing)."""
    c = np.dtype(ftype).type
    edge = c(1) / np.finfo(c).max  # a subnormal near the edge
    with np.errstate(over="ignore", divide="ignore"):
        while not np.isfinite(c(1) / edge):
            edge = np.nextafter(edge, c(1))
        while np.isfinite(c(1) / np.nextafter(edge, c(0))):
            edge = np.nextafter(edge, c(0))
    assert edge < np.finfo(c).tiny
    x = np.ones((2, 40_000), ftype) * edge
    for isa in ISAS:
        for threads in (1, 2):
            ctx = contexts(isa, threads)
            got = piquant.quantize(x, "int8", scale=np.array([edge, 1.0]), zero_point=np.zeros(2, np.int64), axis=0, ctx=ctx)
            want = ref.quantize(x, "int8", np.array([edge, 1.0]), np.zeros(2, np.int64), axis=0)
            assert np.array_equal(got.data, want)
            with pytest.raises(ValueError, match=r"scale\[0\]: expected a finite number > 0"):
                piquant.quantize(x, "int8", scale=np.array([np.nextafter(edge, c(0)), 1.0]), zero_point=np.zeros(2, np.int64), axis=0, ctx=ctx)
