"""Per-set parameters given as torch tensors: the tensors that need no
conversion (float32/float64 scales, int64 zero points, contiguous, dense,
on the CPU, without grad or the negative bit) are used in place and handed
back as the result's parameters; every other tensor is converted as before.
Both give the results and errors of the same parameters as numpy arrays.
Also dequantize() of torch quantized tensors against torch's own."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import piquant
from conftest import ISAS

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")


def _params(x: np.ndarray, qtype: str, grouping: dict) -> tuple[np.ndarray, np.ndarray]:
    p = piquant.compute_params(x, qtype, **grouping)
    return p.scale.astype(np.float64), p.zero_point


def _numpy_result(x, qtype, s, zp, grouping, op):
    if op == "quantize":
        return piquant.quantize(x, qtype, scale=s, zero_point=zp, **grouping).data
    if op == "fake_quantize":
        return piquant.fake_quantize(x, qtype, scale=s, zero_point=zp, **grouping)
    q = piquant.quantize(x, qtype, scale=s, zero_point=zp, **grouping).data
    return piquant.dequantize(q, scale=s, zero_point=zp, **grouping)


def _variants(s: np.ndarray, zp: np.ndarray):
    """(name, scale tensor, zero-point tensor, used in place): tensors the
    checks use as they are, and tensors they convert."""
    st, zt = torch.from_numpy(s.astype(np.float32)), torch.from_numpy(zp.astype(np.int64))
    flat_s, flat_z = st.reshape(-1), zt.reshape(-1)
    strided_s = torch.stack([flat_s, flat_s], 1)[:, 0]  # a non-contiguous view of the same values
    strided_z = torch.stack([flat_z, flat_z], 1)[:, 0]
    neg = torch._neg_view(-flat_s)  # the negative bit set: the memory holds -s
    assert neg.is_neg()
    return [
        ("float32, parameter shape", st, zt, True),
        ("float64, flat", st.double().reshape(-1), flat_z, True),
        ("float32 scales, non-contiguous", strided_s, flat_z, False),
        ("non-contiguous zero points", flat_s, strided_z, False),
        ("float16 scales", flat_s.half(), flat_z, False),
        ("bfloat16 scales", flat_s.bfloat16(), flat_z, False),
        ("int32 zero points", flat_s, flat_z.int(), False),
        ("scales requiring grad", flat_s.clone().requires_grad_(True), flat_z, False),
        ("scales with the negative bit", neg, flat_z, False),
    ]


@pytest.mark.parametrize("op", ["quantize", "fake_quantize", "dequantize"])
@pytest.mark.parametrize("grouping", [{"axis": 0}, {"axis": 1}, {"group_size": 16}], ids=lambda g: f"{next(iter(g))}={next(iter(g.values()))}")
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_torch_parameter_tensors_give_the_numpy_arrays_results(rng, op, grouping, kind):
    x = rng.standard_normal((6, 64)).astype(np.float32)
    s, zp = _params(x, "uint8", grouping)
    for name, st, zt, _ in _variants(s, zp):
        # The values the tensor holds, as numpy (a half scale is rounded): the oracle's parameters.
        s_np = st.detach().resolve_neg().double().numpy().reshape(s.shape)
        want = _numpy_result(x, "uint8", s_np, zt.long().numpy().reshape(zp.shape), grouping, op)
        xin = torch.from_numpy(x) if kind == "torch" else x
        got = _numpy_result(xin, "uint8", st, zt, grouping, op)
        got = got.numpy() if isinstance(got, torch.Tensor) else got
        assert type(got) is np.ndarray if kind == "numpy" else True
        assert np.array_equal(got, want, equal_nan=True), name


@pytest.mark.parametrize("grouping", [{"axis": 0}, {"group_size": 16}], ids=["axis", "group"])
def test_torch_parameters_come_back_as_before(rng, grouping):
    """quantize's result carries the parameters in the compute precision,
    of the parameter shape, torch like x (numpy for numpy x); a tensor given
    exactly so is handed back itself, as a numpy array is."""
    x = rng.standard_normal((6, 64)).astype(np.float32)
    s, zp = _params(x, "int8", grouping)
    pshape = (6,) if "axis" in grouping else (6, 4)
    for name, st, zt, in_place in _variants(s, zp):
        q = piquant.quantize(torch.from_numpy(x), "int8", scale=st, zero_point=zt, **grouping)
        assert isinstance(q.scale, torch.Tensor) and isinstance(q.zero_point, torch.Tensor), name
        assert q.scale.dtype == torch.float32 and q.zero_point.dtype == torch.int64 and not q.scale.requires_grad, name
        assert tuple(q.scale.shape) == pshape and tuple(q.zero_point.shape) == pshape, name
        assert torch.equal(q.scale, st.detach().resolve_neg().float().reshape(pshape)), name
        if in_place and tuple(st.shape) == pshape and st.dtype == torch.float32:
            assert q.scale is st and q.zero_point is zt, name
        qn = piquant.quantize(x, "int8", scale=st, zero_point=zt, **grouping)
        assert type(qn.scale) is np.ndarray and type(qn.zero_point) is np.ndarray, name
        assert qn.scale.dtype == np.float32 and qn.scale.shape == pshape and qn.zero_point.shape == pshape, name


def test_float64_data_keeps_float64_scales_and_float32_scales_widen(rng):
    x = torch.from_numpy(rng.standard_normal((4, 32)))
    s64 = torch.full((4,), 0.015625, dtype=torch.float64)
    zp = torch.zeros(4, dtype=torch.int64)
    assert piquant.quantize(x, "int8", scale=s64, zero_point=zp, axis=0).scale is s64
    q = piquant.quantize(x, "int8", scale=s64.float(), zero_point=zp, axis=0)
    assert q.scale.dtype == torch.float64 and torch.equal(q.scale, s64)


@pytest.mark.parametrize(
    "scale,zero_point,exc,match",
    [
        ([1.0, 1, -1, 1], [0, 0, 0, 0], ValueError, r"scale\[2\]: expected a finite number > 0"),
        ([1.0, float("nan"), 1, 1], [0, 0, 0, 0], ValueError, r"scale\[1\]: expected a finite number > 0"),
        ([1.0, 1, 1e-45, 1], [0, 0, 0, 0], ValueError, r"scale\[2\]: .*reciprocal is finite in float32"),
        ([1.0, 1, 1, 1], [0, 300, 0, 0], ValueError, r"zero_point\[1\]: expected an integer in \[0, 255\]"),
        ([1.0, 1, 1, 1], [0, 0, 0, -1], ValueError, r"zero_point\[3\]: expected an integer in \[0, 255\]"),
        ([1.0, 1, 1], [0, 0, 0], ValueError, r"scale: expected shape \(4,\)"),
    ],
)
@pytest.mark.parametrize("n", [64, 0], ids=["data", "empty"])  # empty data: the values are checked in Python
def test_bad_values_in_torch_parameters_are_named_as_in_numpy_ones(scale, zero_point, exc, match, n):
    x = torch.randn(4, n)
    for s, zp in ((np.array(scale, np.float32), np.array(zero_point, np.int64)),
                  (torch.tensor(scale, dtype=torch.float32), torch.tensor(zero_point, dtype=torch.int64))):
        with pytest.raises(exc, match=match):
            piquant.quantize(x, "uint8", scale=s, zero_point=zp, axis=0)
        with pytest.raises(exc, match=match):
            piquant.dequantize(torch.zeros(4, n, dtype=torch.uint8), scale=s, zero_point=zp, axis=0)


def _odd_tensors():
    """Parameter tensors no kernel may read in place, and the error each gets."""
    ones, zeros = torch.ones(2), torch.zeros(2, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's prototype warning for nested tensors
        nested_s, nested_z = torch.nested.nested_tensor([torch.ones(1)] * 2), torch.nested.nested_tensor([torch.zeros(1, dtype=torch.int64)] * 2)
    return [
        (nested_s, zeros, TypeError, "scale: expected a dense tensor, got a nested tensor"),
        (ones, nested_z, TypeError, "zero_point: expected a dense tensor, got a nested tensor"),
        (torch.ones(2, device="meta"), zeros, ValueError, "scale: expected a CPU tensor, got one on meta"),
        (ones, torch.zeros(2, dtype=torch.int64, device="meta"), ValueError, "zero_point: expected a CPU tensor, got one on meta"),
        (ones.to_sparse(), zeros, TypeError, r"scale: expected a dense \(strided\) tensor, got layout torch.sparse_coo"),
    ]


@pytest.mark.parametrize("k", range(5))
def test_tensors_that_cannot_be_read_in_place_are_refused_by_name(k):
    s, zp, exc, match = _odd_tensors()[k]
    with pytest.raises(exc, match=match):
        piquant.quantize(torch.randn(2, 8), "uint8", scale=s, zero_point=zp, axis=0)


def test_uint64_zero_points_as_tensors(rng):
    x = rng.standard_normal((4, 8))
    q = piquant.quantize(x, "uint64", axis=0, symmetric=True)
    zt = torch.from_numpy(q.zero_point)
    qt = piquant.quantize(torch.from_numpy(x), "uint64", scale=torch.from_numpy(q.scale), zero_point=zt, axis=0)
    assert qt.zero_point is zt and np.array_equal(qt.data.numpy(), q.data)
    with pytest.raises(TypeError, match="zero_point: expected integers"):
        piquant.quantize(x, "uint64", scale=q.scale, zero_point=torch.zeros(4), axis=0)


def test_reference_backend_takes_torch_parameters(rng, monkeypatch):
    x = rng.standard_normal((6, 64)).astype(np.float32)
    s, zp = _params(x, "int4", {"group_size": 16})
    st, zt = torch.from_numpy(s.astype(np.float32)), torch.from_numpy(zp)
    want = piquant.quantize(x, "int4", scale=s, zero_point=zp, group_size=16).data
    monkeypatch.setenv("PIQUANT_BACKEND", "reference")
    with piquant.Context(1) as ctx:
        assert ctx.backend.name == "reference"
        q = piquant.quantize(torch.from_numpy(x), "int4", scale=st, zero_point=zt, group_size=16, ctx=ctx)
        assert np.array_equal(q.data.numpy(), want) and q.scale is st
        with pytest.raises(ValueError, match=r"scale\[2\]: expected a finite number > 0"):
            piquant.quantize(torch.from_numpy(x), "int4", scale=torch.tensor([1.0, 1, 0, 1, 1, 1] * 4).reshape(6, 4), zero_point=zt,
                             group_size=16, ctx=ctx)


def _torch_quantized(x, per_channel: bool, qtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation of quantized tensors
        if per_channel:
            s = torch.rand(x.shape[0], dtype=torch.float64) * 0.05 + 0.01
            zp = torch.randint(0, 10, (x.shape[0],))
            return torch.quantize_per_channel(x, s, zp, 0, qtype)
        return torch.quantize_per_tensor(x, 0.03, 5, qtype)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("qname", ["quint8", "qint8", "qint32"])
def test_dequantize_torch_quantized_matches_torch(per_channel, qname):
    """Per tensor, torch's own dequantize() bit for bit; per channel, torch
    computes in float64 and rounds, piquant in the output's precision with
    the scale rounded to it (docs/), one rounding of (q - zero_point) * scale."""
    x = torch.randn(8, 48)
    tq = _torch_quantized(x, per_channel, getattr(torch, qname))
    if per_channel:
        s, zp = tq.q_per_channel_scales().reshape(-1, 1), tq.q_per_channel_zero_points().reshape(-1, 1)
        want = (tq.int_repr().float() - zp) * s.float()
    else:
        s, zp = tq.q_scale(), tq.q_zero_point()
        want = tq.dequantize()
        assert torch.equal(want, (tq.int_repr().float() - zp) * torch.tensor(s, dtype=torch.float32))
    assert torch.equal(piquant.dequantize(tq), want)
    out = torch.empty(8, 48)
    assert piquant.dequantize(tq, out=out) is out and torch.equal(out, want)
    assert torch.equal(piquant.dequantize(tq, torch.float64), (tq.int_repr().double() - zp) * s)
    with pytest.raises(ValueError, match="q: a torch quantized tensor carries its parameters; do not restate them"):
        piquant.dequantize(tq, axis=0)
    with pytest.raises(ValueError, match="q: a torch quantized tensor carries its parameters; do not restate them"):
        piquant.dequantize(tq, scale=1.0)
