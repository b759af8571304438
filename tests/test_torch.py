"""Agreement with torch's own quantization, and the pi-quant compatible API."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import piquant
import piquant_reference as ref

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


@pytest.mark.parametrize("symmetric", (False, True))
@pytest.mark.parametrize("tdtype,qtype", [(torch.quint8, "uint8"), (torch.qint8, "int8")])
def test_compute_params_matches_minmax_observer(rng, symmetric, tdtype, qtype):
    from torch.ao.quantization import MinMaxObserver

    for shift in (-3.0, 0.0, 2.0):
        x = torch.from_numpy((rng.standard_normal(10_000) + shift).astype(np.float32))
        scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
        obs = MinMaxObserver(dtype=tdtype, qscheme=scheme)
        obs(x)
        scale, zp = obs.calculate_qparams()
        got = piquant.compute_params(x, qtype, symmetric=symmetric)
        assert np.float32(got.scale) == np.float32(scale.item())
        assert got.zero_point == zp.item()


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
    for dtype in (torch.quint8, torch.uint8, torch.quint4x2):
        scale, zp = piquant.torch.compute_quant_params(x, dtype=dtype)
        q = piquant.torch.quantize(x, scale=scale, zero_point=zp, dtype=dtype)
        assert q.dtype == dtype and q.shape == x.shape
        y = piquant.torch.dequantize(q, scale=scale, zero_point=zp, dtype=torch.float32)
        assert y.shape == x.shape
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
