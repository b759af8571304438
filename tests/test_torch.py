"""Agreement with torch's own quantization, and the pi-quant compatible API."""

from __future__ import annotations

import numpy as np
import pytest

import piquant
import piquant_reference as ref

torch = pytest.importorskip("torch")

TORCH_TYPES = [(torch.quint8, "uint8"), (torch.qint8, "int8"), (torch.quint4x2, "uint4")]


@pytest.mark.parametrize("tdtype,qtype", TORCH_TYPES)
def test_quantize_agrees_with_torch_except_at_ties(rng, tdtype, qtype):
    x = torch.from_numpy((rng.standard_normal(200_000) * 3).astype(np.float32))
    p = piquant.compute_params(x, qtype)
    ours = piquant.quantize(x, qtype, scale=p.scale, zero_point=p.zero_point)
    ours_vals = ref.unpack_bits(ours.data.numpy(), x.numel(), 4, False) if qtype == "uint4" else ours.data.numpy().astype(np.int64)
    theirs = torch.quantize_per_tensor(x, p.scale, p.zero_point, tdtype)
    # torch.int_repr is not defined for quint4x2: dequantize and invert instead.
    theirs_vals = np.rint(theirs.dequantize().numpy() / np.float32(p.scale)).astype(np.int64) + p.zero_point
    diff = np.abs(ours_vals.astype(np.int64) - theirs_vals)
    assert diff.max() <= 1
    rate = np.count_nonzero(diff) / diff.size
    assert rate < 1e-3, f"mismatch rate {rate}"


OBSERVED = [
    (torch.quint8, "uint8", None, (False, True)),
    (torch.qint8, "int8", None, (False, True)),
    (torch.qint32, "int32", None, (False, True)),
    # torch gives quint4x2 a symmetric zero point of 0 (ours: 8, the middle).
    (torch.quint4x2, "uint4", None, (False,)),
    (torch.quint8, "uint2", (0, 3), (False,)),
    (torch.qint8, "int4", (-8, 7), (False,)),
]


@pytest.mark.parametrize("tdtype,qtype,qrange,schemes", OBSERVED)
def test_compute_params_matches_minmax_observer(rng, tdtype, qtype, qrange, schemes):
    from torch.ao.quantization import MinMaxObserver

    limits = {} if qrange is None else dict(quant_min=qrange[0], quant_max=qrange[1])
    for symmetric, shift in [(sym, shift) for sym in schemes for shift in (-3.0, 0.0, 2.0)]:
        x = torch.from_numpy((rng.standard_normal(10_000) + shift).astype(np.float32))
        scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
        obs = MinMaxObserver(dtype=tdtype, qscheme=scheme, **limits)
        obs(x)
        scale, zp = obs.calculate_qparams()
        got = piquant.compute_params(x, qtype, symmetric=symmetric)
        assert np.float32(got.scale) == np.float32(scale.item()), (symmetric, shift)
        assert got.zero_point == zp.item(), (symmetric, shift)


def test_torch_in_torch_out_and_bfloat16():
    x = torch.linspace(-2, 2, 1001, dtype=torch.bfloat16).reshape(7, 11, 13)
    q = piquant.quantize(x, "int4")
    assert isinstance(q.data, torch.Tensor) and q.data.dtype == torch.uint8 and q.data.numel() == (1001 + 1) // 2
    y = piquant.dequantize(q, torch.bfloat16)
    assert y.shape == x.shape and y.dtype == torch.bfloat16
    assert torch.max(torch.abs(y.float() - x.float())) <= q.scale * 0.5 + 0.02


def test_dequantize_accepts_torch_quantized_tensor():
    x = torch.randn(4097)
    qt = torch.quantize_per_tensor(x, 0.02, 100, torch.quint8)
    y = piquant.dequantize(qt)
    assert torch.equal(y, qt.dequantize())


def test_pi_quant_api_round_trip_and_real_params():
    x = torch.randn(3, 1000)
    for dtype in (torch.quint8, torch.uint8, torch.quint4x2, torch.quint2x4, torch.qint32):
        scale, zp = piquant.torch.compute_quant_params(x, dtype=dtype)
        q = piquant.torch.quantize(x, scale=scale, zero_point=zp, dtype=dtype)
        assert q.dtype == dtype and q.shape == x.shape
        y = piquant.torch.dequantize(q, scale=scale, zero_point=zp, dtype=torch.float32)
        assert y.shape == x.shape
        if dtype != torch.quint2x4:  # x reaches beyond 2-bit's range
            assert torch.max(torch.abs(y - x)) <= scale * 0.5 * 1.0001
        if dtype != torch.uint8:
            # A quantized tensor carries its real parameters: torch's own
            # dequantize agrees with ours.
            assert q.q_scale() == pytest.approx(scale) and q.q_zero_point() == zp
            assert torch.equal(q.dequantize(), y)


def test_pi_quant_dequantize_add_accumulates():
    x = torch.randn(70_000)
    scale, zp = piquant.torch.compute_quant_params(x, dtype=torch.uint8)
    q = piquant.torch.quantize(x, scale=scale, zero_point=zp, dtype=torch.uint8)
    once = piquant.torch.dequantize(q, scale=scale, zero_point=zp, dtype=torch.float32, reduce_op="add")
    acc = torch.ones(70_000)
    piquant.torch.dequantize(q, scale=scale, zero_point=zp, dtype=torch.float32, reduce_op="add", out=acc)
    assert torch.equal(acc, once + 1)


def test_pi_quant_context_and_enums():
    ctx = piquant.Context.get()
    assert ctx is piquant.Context.get()
    x = torch.randn(100)
    out = torch.empty(100, dtype=torch.uint8)
    ctx.quantize_ptr(x.data_ptr(), piquant.DataType.F32, out.data_ptr(), piquant.DataType.UINT8, 100, 0.05, 128, piquant.RoundMode.NEAREST)
    back = torch.empty(100)
    ctx.dequantize_ptr(out.data_ptr(), piquant.DataType.UINT8, back.data_ptr(), piquant.DataType.F32, 100, 0.05, 128, piquant.ReduceOp.SET)
    assert torch.max(torch.abs(back - x)) <= 0.0250001
    s, z = ctx.compute_quant_params_ptr_float32(x.data_ptr(), piquant.DataType.UINT8, 100)
    assert (s, z) == tuple(piquant.compute_params(x, "uint8"))
    with pytest.raises(ValueError, match="zero_point"):
        ctx.quantize_ptr(x.data_ptr(), piquant.DataType.F32, out.data_ptr(), piquant.DataType.UINT8, 100, 0.05, 300, piquant.RoundMode.NEAREST)


TORCH_QUANTIZED = [(torch.quint8, "uint8"), (torch.qint8, "int8"), (torch.qint32, "int32"), (torch.quint4x2, "uint4"), (torch.quint2x4, "uint2")]


@pytest.mark.parametrize("tdtype,qtype", TORCH_QUANTIZED)
@pytest.mark.parametrize("round_mode", ("nearest", "stochastic"))
def test_torch_quantized_outputs_agree_with_torch(rng, tdtype, qtype, round_mode):
    x = torch.from_numpy((rng.standard_normal((3, 1001)) * 2).astype(np.float32))
    q = piquant.quantize(x, tdtype, round_mode=round_mode, seed=11)
    plain = piquant.quantize(x, qtype, scale=q.scale, zero_point=q.zero_point, round_mode=round_mode, seed=11)
    t = q.data
    assert t.is_quantized and t.dtype == tdtype and tuple(t.shape) == x.shape
    assert t.q_scale() == q.scale and t.q_zero_point() == q.zero_point
    # The same integers as the plain form; torch reads them back as we do.
    assert np.array_equal(t.int_repr().numpy().reshape(-1).view(np.uint8), plain.data.numpy().reshape(-1).view(np.uint8))
    ours = piquant.dequantize(q)
    assert torch.equal(t.dequantize(), ours)
    # Accepted back without restating anything.
    assert torch.equal(piquant.dequantize(t), ours)
    with pytest.raises(ValueError, match="out"):
        piquant.quantize(x, tdtype, out=torch.empty(x.shape, dtype=torch.uint8))


def test_torch_quantized_output_needs_torch_input():
    with pytest.raises(TypeError, match="torch"):
        piquant.quantize(np.ones(4, np.float32), torch.quint8)


@pytest.mark.parametrize("fdtype", (torch.float16, torch.float64, torch.bfloat16, torch.float32))
@pytest.mark.parametrize("qdtype", (torch.uint8, torch.int16, torch.uint16, torch.int32, torch.uint32, torch.int64, torch.uint64))
def test_every_torch_integer_and_float_type(rng, fdtype, qdtype):
    x = torch.from_numpy(rng.standard_normal(257) * 100).to(fdtype)
    q = piquant.quantize(x, qdtype)
    assert q.data.dtype == qdtype and q.data.shape == x.shape
    y = piquant.dequantize(q, fdtype)
    assert y.dtype == fdtype
    # float16/bfloat16 widen exactly to float32, the compute type.
    xs = x.numpy() if fdtype == torch.float64 else x.float().numpy()
    assert np.array_equal(q.data.numpy(), ref.quantize(xs, str(qdtype).removeprefix("torch."), q.scale, q.zero_point))
    f = piquant.fake_quantize(x, qdtype, scale=q.scale, zero_point=q.zero_point)
    assert f.dtype == fdtype and torch.equal(f, y)


PER_CHANNEL = [(torch.quint8, "uint8", (False, True)), (torch.qint8, "int8", (False, True)), (torch.qint32, "int32", (False,))]


@pytest.mark.parametrize("tdtype,qtype,schemes", PER_CHANNEL)
@pytest.mark.parametrize("axis", (0, 1, 2))
def test_per_channel_matches_observer_and_quantize_per_channel(rng, tdtype, qtype, schemes, axis):
    from torch.ao.quantization import PerChannelMinMaxObserver

    for symmetric in schemes:
        # Channels with their own offsets and spreads.
        x = torch.from_numpy((rng.standard_normal((6, 40, 50)) * rng.uniform(0.1, 10, 6)[:, None, None] + rng.uniform(-3, 3, (1, 1, 50))).astype(np.float32))
        scheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        obs = PerChannelMinMaxObserver(ch_axis=axis, dtype=tdtype, qscheme=scheme)
        obs(x)
        scale, zp = obs.calculate_qparams()
        p = piquant.compute_params(x, qtype, symmetric=symmetric, axis=axis)
        assert torch.equal(p.scale, scale.float()), symmetric
        assert torch.equal(p.zero_point, zp.long()), symmetric

        if qtype == "int32":
            continue  # torch divides in float64 for qint32; ours is float32 arithmetic (docs/semantics.md)
        ours = piquant.quantize(x, qtype, scale=p.scale, zero_point=p.zero_point, axis=axis).data.numpy().astype(np.int64)
        theirs = torch.quantize_per_channel(x, scale.double(), zp, axis, tdtype).int_repr().numpy().astype(np.int64)
        diff = np.abs(ours - theirs)
        assert diff.max() <= 1
        assert np.count_nonzero(diff) / diff.size < 1e-3


def test_torch_per_channel_tensors_both_ways(rng):
    x = torch.from_numpy(rng.standard_normal((8, 33)).astype(np.float32))
    q = piquant.quantize(x, torch.qint8, axis=0, symmetric=True)
    assert q.data.is_quantized and q.data.qscheme() == torch.per_channel_affine and q.data.q_per_channel_axis() == 0
    assert torch.equal(q.data.q_per_channel_scales().float(), q.scale)
    # torch dequantizes per channel as fma(q, scale, -zp·scale), ours is the
    # exact c(q - zp) · scale: they can differ in the last bit.
    torch.testing.assert_close(piquant.dequantize(q), q.data.dequantize(), rtol=2.0**-22, atol=0)
    assert torch.equal(piquant.dequantize(q), q.scale[:, None] * (q.data.int_repr().float() - q.zero_point[:, None].float()))
    theirs = torch.quantize_per_channel(x, torch.rand(33, dtype=torch.float64) + 0.01, torch.randint(0, 255, (33,)), 1, torch.quint8)
    torch.testing.assert_close(piquant.dequantize(theirs), theirs.dequantize(), rtol=2.0**-22, atol=1e-7)
    with pytest.raises(ValueError, match="group_size: torch quantized tensors have no per-group form"):
        piquant.quantize(x, torch.qint8, group_size=11)
