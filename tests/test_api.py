"""The Python API: shapes, out=, reduce modes, errors, info, environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import piquant
import piquant_reference as ref


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize("qtype", ["uint8", "int8", "uint4", "int4"])
@pytest.mark.parametrize("shape", [(), (1,), (5, 7), (3, 1, 9), (2, 0, 4)])
def test_round_trip_keeps_shape_and_error_bound(rng, qtype, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    q = piquant.quantize(x, qtype)
    assert q.shape == x.shape and q.dtype.short_name == qtype
    y = piquant.dequantize(q)
    assert y.shape == x.shape and y.dtype == np.float32
    if x.size:
        assert np.max(np.abs(y - x)) <= q.scale / 2 * (1 + 1e-6)


def test_non_contiguous_input_is_copied(rng):
    x = rng.standard_normal((64, 64)).astype(np.float32)
    q = piquant.quantize(x.T, "uint8", scale=0.05, zero_point=128)
    np.testing.assert_array_equal(q.data, ref.quantize(np.ascontiguousarray(x.T), "uint8", 0.05, 128))


def test_out_is_written_in_place(rng):
    x = rng.standard_normal(1001).astype(np.float32)
    out = np.empty(501, np.uint8)
    q = piquant.quantize(x, "uint4", scale=0.5, zero_point=8, out=out)
    assert q.data is out
    np.testing.assert_array_equal(out, ref.quantize(x, "uint4", 0.5, 8))
    y = np.empty(1001, np.float32)
    assert piquant.dequantize(q, out=y) is y


@pytest.mark.parametrize(
    "out,match",
    [
        (np.empty(10, np.int8), "dtype"),
        (np.empty(11, np.uint8), "elements"),
        (np.empty(20, np.uint8)[::2], "contiguous"),
        ("not an array", "numpy array or a torch tensor"),
    ],
)
def test_bad_out_raises_and_writes_nothing(out, match):
    x = np.ones(10, np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        piquant.quantize(x, "uint8", scale=1.0, zero_point=0, out=out)


def test_read_only_out_raises():
    out = np.zeros(10, np.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        piquant.quantize(np.ones(10, np.float32), "uint8", scale=1.0, zero_point=0, out=out)
    assert not out.any()


def test_out_aliasing_input_raises():
    buf = np.zeros(40, np.uint8)
    x = buf.view(np.float32)
    with pytest.raises(ValueError, match="shares memory"):
        piquant.quantize(x, "uint8", scale=1.0, zero_point=0, out=buf[:10])


def test_add_accumulates(rng):
    x = rng.standard_normal(100_003).astype(np.float32)
    q = piquant.quantize(x, "int8")
    acc = np.full(x.shape, 2.0, np.float32)
    piquant.dequantize(q, out=acc, reduce="add")
    piquant.dequantize(q, out=acc, reduce=piquant.ReduceOp.ADD)
    y = piquant.dequantize(q)
    np.testing.assert_array_equal(acc, (np.float32(2) + y) + y)
    with pytest.raises(ValueError, match="out"):
        piquant.dequantize(q, reduce="add")


def test_bfloat16_numpy(rng):
    x = rng.standard_normal(333).astype(ml_dtypes.bfloat16)
    q = piquant.quantize(x, "uint8")
    y = piquant.dequantize(q, ml_dtypes.bfloat16)
    assert y.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(y.view(np.uint16), ref.dequantize(q.data, "uint8", q.scale, q.zero_point, out_dtype="bfloat16"))


def test_raw_packed_array_needs_shape(rng):
    x = rng.standard_normal(7).astype(np.float32)
    q = piquant.quantize(x, "int4", scale=0.5, zero_point=0)
    y = piquant.dequantize(q.data, scale=0.5, zero_point=0, qdtype="int4", shape=(7,))
    np.testing.assert_array_equal(y, piquant.dequantize(q))
    with pytest.raises(ValueError, match="bytes"):
        piquant.dequantize(q.data, scale=0.5, zero_point=0, qdtype="int4", shape=(9,))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(dtype="float32"), TypeError, "dtype"),
        (dict(dtype="uint3"), TypeError, "dtype"),
        (dict(dtype=np.float16), TypeError, "dtype"),
        (dict(dtype="int64", scale=1.0, zero_point=2**63), ValueError, "zero_point"),
        (dict(dtype="uint64", scale=1.0, zero_point=-1), ValueError, "zero_point"),
        (dict(seed=-1, round_mode="stochastic"), ValueError, "seed"),
        (dict(seed=2**64), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(scale=0.0, zero_point=0), ValueError, "scale"),
        (dict(scale=-1.0, zero_point=0), ValueError, "scale"),
        (dict(scale=float("nan"), zero_point=0), ValueError, "scale"),
        (dict(scale=float("inf"), zero_point=0), ValueError, "scale"),
        (dict(scale=1e-45, zero_point=0), ValueError, "scale"),
        (dict(scale=1e39, zero_point=0), ValueError, "scale"),
        (dict(scale="1", zero_point=0), TypeError, "scale"),
        (dict(scale=1.0, zero_point=256), ValueError, "zero_point"),
        (dict(scale=1.0, zero_point=-1), ValueError, "zero_point"),
        (dict(scale=1.0, zero_point=1.5), TypeError, "zero_point"),
        (dict(scale=1.0), ValueError, "scale, zero_point"),
        (dict(round_mode="up"), ValueError, "round_mode"),
        (dict(ctx="ctx"), TypeError, "ctx"),
    ],
)
def test_quantize_argument_errors(kwargs, exc, match):
    kwargs = {"dtype": "uint8", **kwargs}
    with pytest.raises(exc, match=match):
        piquant.quantize(np.ones(4, np.float32), **kwargs)


@pytest.mark.parametrize(
    "x,match",
    [([1.0, 2.0], "numpy array"), (np.ones(3, np.complex64), "dtype"), (np.ones(3, np.uint8), "float32, bfloat16, float16 or float64")],
)
def test_bad_input_raises(x, match):
    with pytest.raises(TypeError, match=match):
        piquant.quantize(x, "uint8", scale=1.0, zero_point=0)


def test_dequantize_argument_errors():
    q = np.zeros(4, np.uint8)
    with pytest.raises(ValueError, match="scale"):
        piquant.dequantize(q, zero_point=0)
    with pytest.raises(TypeError, match="qdtype"):
        piquant.dequantize(q, scale=1.0, zero_point=0, qdtype="int8")
    with pytest.raises(ValueError, match="reduce"):
        piquant.dequantize(q, scale=1.0, zero_point=0, reduce="mul")
    with pytest.raises(TypeError, match="dtype"):
        piquant.dequantize(q, "uint8", scale=1.0, zero_point=0)
    with pytest.raises(ValueError, match="zero_point"):
        piquant.dequantize(q.view(np.int8), scale=1.0, zero_point=200)


def test_compute_params_rules():
    assert piquant.compute_params(np.array([np.nan, 1.0, -1.0], np.float32), "int8") == piquant.compute_params(np.array([1.0, -1.0], np.float32), "int8")
    with pytest.raises(ValueError, match="infinite"):
        piquant.compute_params(np.array([1.0, np.inf], np.float32), "uint8")
    p = piquant.compute_params(np.zeros(0, np.float32), "uint8")
    assert p == (np.finfo(np.float32).eps.item(), 0)
    assert piquant.compute_params(np.ones(5, np.float32), "uint4", symmetric=True).zero_point == 8


def test_info_and_cli():
    info = piquant.info()
    assert {"version", "isa", "available_isas", "num_threads", "library"} <= info.keys()
    assert info["isa"] in info["available_isas"]
    out = subprocess.run([sys.executable, "-m", "piquant", "info"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["version"] == piquant.__version__


def test_forced_isa_and_threads():
    for isa in piquant.info()["available_isas"]:
        with piquant.Context(2, isa=isa) as ctx:
            assert ctx.isa == isa and ctx.num_threads == 2
    r = run_python("import piquant; print(piquant.info()['isa'], piquant.info()['num_threads'])", PIQUANT_ISA="generic", PIQUANT_NUM_THREADS="3")
    assert r.stdout.split() == ["generic", "3"], r.stderr


@pytest.mark.parametrize("isa", ["avx1024", "neon"])
def test_unknown_or_unavailable_isa_raises(isa):
    with pytest.raises(ValueError, match="isa"):
        piquant.Context(isa=isa)


@pytest.mark.parametrize("var,value", [("PIQUANT_ISA", "bogus"), ("PIQUANT_NUM_THREADS", "many"), ("PIQUANT_NUM_THREADS", "0"), ("PIQUANT_BACKEND", "gpu")])
def test_nonsense_environment_raises_clearly(var, value):
    r = run_python("import piquant, numpy as np; piquant.quantize(np.ones(3, np.float32), 'uint8')", **{var: value})
    assert r.returncode == 1 and "ValueError" in r.stderr and var in r.stderr, r.stderr


def test_reference_backend_forced_matches_native(rng):
    code = (
        "import piquant, numpy as np;"
        "x = np.random.default_rng(1).standard_normal(10007).astype(np.float32);"
        "q = piquant.quantize(x, 'int4');"
        "print(piquant.info()['backend'], q.scale, q.zero_point, piquant.dequantize(q).tobytes().hex()[:400])"
    )
    ref_run = run_python(code, PIQUANT_BACKEND="reference")
    nat_run = run_python(code, PIQUANT_BACKEND="native")
    assert ref_run.returncode == 0 and nat_run.returncode == 0, ref_run.stderr + nat_run.stderr
    assert ref_run.stdout.split()[0] == "reference" and nat_run.stdout.split()[0] == "native"
    assert ref_run.stdout.split()[1:] == nat_run.stdout.split()[1:]


def test_missing_library_falls_back_with_warning(tmp_path):
    code = (
        "import warnings, piquant._native as n\n"
        "n.candidates = lambda: []\n"
        "import piquant, numpy as np\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always'); q = piquant.quantize(np.ones(3, np.float32), 'uint8')\n"
        "print(piquant.info()['backend'], any('reference' in str(x.message) for x in w))"
    )
    r = run_python(code, PIQUANT_LIBRARY="")  # a library asked for by name does not fall back (tests/test_lifetime.py)
    assert r.stdout.split() == ["reference", "True"], r.stderr


def test_closed_context_raises():
    ctx = piquant.Context(1)
    ctx.close()
    with pytest.raises(RuntimeError, match="closed"):
        piquant.quantize(np.ones(3, np.float32), "uint8", ctx=ctx)


def test_fake_quantize_in_place_and_add(rng):
    x = rng.standard_normal((5, 7)).astype(np.float32)
    want = piquant.quantize(x, "int4", scale=0.2, zero_point=0).dequantize()
    y = piquant.fake_quantize(x, "int4", scale=0.2, zero_point=0)
    assert y.shape == x.shape and y.dtype == x.dtype and np.array_equal(y, want)
    acc = np.ones_like(x)
    piquant.fake_quantize(x, "int4", scale=0.2, zero_point=0, reduce="add", out=acc)
    assert np.array_equal(acc, np.float32(1) + want)
    inplace = x.copy()
    assert piquant.fake_quantize(inplace, "int4", scale=0.2, zero_point=0, out=inplace) is inplace
    assert np.array_equal(inplace, want)
    with pytest.raises(ValueError, match="out"):
        piquant.fake_quantize(x, "int4", scale=0.2, zero_point=0, reduce="add")
    big = rng.standard_normal(100).astype(np.float32)
    with pytest.raises(ValueError, match="shares memory"):
        piquant.fake_quantize(big[:50], "int4", scale=0.2, zero_point=0, out=big[1:51])
    with pytest.raises(ValueError, match="dtype"):
        piquant.fake_quantize(x, "int4", scale=0.2, zero_point=0, out=np.empty(x.shape, np.float64))


@pytest.mark.parametrize("ftype", [np.float16, np.float64])
def test_numpy_float16_and_float64(rng, ftype):
    x = (rng.standard_normal(1001) * 3).astype(ftype)
    q = piquant.quantize(x, "int16")
    assert q.data.dtype == np.int16
    y = piquant.dequantize(q, ftype)
    assert y.dtype == ftype
    tol = q.scale * 0.5 + (np.finfo(ftype).eps * 8 if ftype == np.float16 else 0)
    assert np.max(np.abs(y.astype(np.float64) - x.astype(np.float64))) <= tol * 1.01


def test_float64_keeps_int64_precision():
    x = np.array([2.0**52 + 1, -(2.0**52) - 3, 123456789012345.0])
    q = piquant.quantize(x, "int64", scale=1.0, zero_point=0)
    assert q.data.tolist() == [2**52 + 1, -(2**52) - 3, 123456789012345]
    assert np.array_equal(q.dequantize(np.float64), x)


def test_uint64_zero_points_above_int64():
    x = np.linspace(-1, 1, 101)
    p = piquant.compute_params(x, "uint64", symmetric=True)
    assert p.zero_point == 2**63
    q = piquant.quantize(x, "uint64", scale=p.scale, zero_point=p.zero_point)
    assert q.data.dtype == np.uint64 and int(q.data[50]) == 2**63
    assert np.max(np.abs(q.dequantize(np.float64) - x)) <= p.scale


def test_two_bit_types_pack_four_per_byte():
    x = np.array([0.0, 1.0, 2.0, 3.0, 1.0], np.float32)
    q = piquant.quantize(x, "uint2", scale=1.0, zero_point=0)
    assert q.data.tolist() == [0b11100100, 0b01]
    assert np.array_equal(q.dequantize(), x)
    assert piquant.DataType.UINT2.bit_size == 2 and piquant.DataType.INT2.qmin == -2


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_fast_path_matches_general_path_and_still_checks(rng, kind):
    import torch

    conv = (lambda a: a) if kind == "numpy" else torch.from_numpy
    x = conv(rng.standard_normal(777).astype(np.float32))
    for qtype, storage, n_out in [("uint8", np.uint8, 777), ("int4", np.uint8, 389), ("int16", np.int16, 777)]:
        out = conv(np.zeros(n_out, storage))
        q = piquant.quantize(x, qtype, scale=0.05, zero_point=0, out=out, round_mode="stochastic", seed=3)
        assert q.data is out and q.shape == (777,) and q.scale == float(np.float32(0.05))
        general = piquant.quantize(x, qtype, scale=0.05, zero_point=0, round_mode="stochastic", seed=3)
        assert np.array_equal(np.asarray(out), np.asarray(general.data))
    y = conv(np.zeros(777, np.float32))
    q8 = piquant.quantize(x, "uint8", scale=0.05, zero_point=128)
    assert piquant.dequantize(q8, out=y) is y and np.array_equal(np.asarray(y), np.asarray(piquant.dequantize(q8)))
    # The checks of the general path still apply when the fast one declines.
    with pytest.raises(ValueError, match="zero_point"):
        piquant.quantize(x, "uint8", scale=0.05, zero_point=256, out=conv(np.zeros(777, np.uint8)))
    with pytest.raises(ValueError, match="scale"):
        piquant.quantize(x, "uint8", scale=float("nan"), zero_point=0, out=conv(np.zeros(777, np.uint8)))
    with pytest.raises(ValueError, match="expected 777"):
        piquant.quantize(x, "uint8", scale=0.05, zero_point=0, out=conv(np.zeros(776, np.uint8)))
    ctx = piquant.Context(1)
    ctx.close()
    with pytest.raises(RuntimeError, match="closed"):
        piquant.quantize(x, "uint8", scale=0.05, zero_point=0, out=conv(np.zeros(777, np.uint8)), ctx=ctx)
    buf = conv(np.zeros(800, np.float32))
    with pytest.raises(ValueError, match="shares memory"):
        piquant.fake_quantize(buf[:700], "uint8", scale=0.05, zero_point=0, out=buf[10:710])


def test_calls_from_many_threads_get_their_own_results():
    """Per-thread state of the call path (compute_params' result slots, the
    argument caches) is not shared: threads computing and using different
    parameters at once each get what a lone call gives."""
    import threading

    rng = np.random.default_rng(7)
    xs = [rng.standard_normal(257, dtype=np.float32) * (k + 1) + k for k in range(6)]
    want = [(piquant.compute_params(x, "uint8"), piquant.quantize(x, "uint8").data.copy()) for x in xs]
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(300):
            p = piquant.compute_params(xs[k], "uint8")
            q = piquant.quantize(xs[k], "uint8")
            if p != want[k][0] or (q.scale, q.zero_point) != tuple(want[k][0]) or not np.array_equal(q.data, want[k][1]):
                errors.append(f"thread {k}: {p} != {want[k][0]}")
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
