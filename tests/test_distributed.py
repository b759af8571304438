"""piquant.distributed.all_reduce on gloo over 127.0.0.1, with 1–4 local
processes: the result equals the float all-reduce within the bound the
quantization implies, every rank holds identical bytes, stochastic rounding
is unbiased over repeated calls, error feedback pays errors back, and a peer
that exits makes the others fail with a clear error instead of hanging."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

from conftest import ISAS  # noqa: E402

pytestmark = pytest.mark.skipif(not ISAS, reason="native library not loaded")

PRELUDE = """
import json, sys, time, torch, torch.distributed as dist, numpy as np
import piquant, piquant.distributed as pd, piquant_reference as ref
rank, world, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
def gather(t):
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return parts
"""

CHECKS = """
out = {"bound_violations": [], "not_identical": [], "cases": 0}
for n in (0, 1, world - 1, 1000, 100_003):
    for tdtype in (torch.float32, torch.bfloat16):
        for qtype in ("uint8", "uint4"):
            for op, rounding in (("sum", "stochastic"), ("avg", "nearest")):
                g = torch.Generator().manual_seed(1000 * rank + n)
                x = (torch.randn(n, generator=g) * (1 + rank)).to(tdtype)
                xs = torch.stack(gather(x)).double() if n else torch.zeros(world, 0, dtype=torch.float64)
                exact = xs.sum(0) / (world if op == "avg" else 1)
                y = pd.all_reduce(x.clone(), dtype=qtype, op=op, rounding=rounding)
                # Every partial sum lies within M = sum of max|x_r|; a chunk's scale is at most
                # 2M/(qmax-qmin); each element passes through `world` quantizations (world-1
                # partial sums, one final), each off by < 1 step (stochastic) or <= 1/2 (nearest).
                qmin, qmax = ref.qrange(qtype)
                m = float(xs.abs().amax(1).sum()) if n else 0.0
                steps = world * (1.0 if rounding == "stochastic" else 0.5)
                bound = steps * 2 * m * 1.01 / (qmax - qmin) / (world if op == "avg" else 1) + 1e-6
                if tdtype == torch.bfloat16:
                    bound += float(exact.abs().max()) * 2**-8 if n else 0  # the final rounding to bfloat16
                err = float((y.double() - exact).abs().max()) if n else 0.0
                if err > bound:
                    out["bound_violations"].append([n, str(tdtype), qtype, op, rounding, err, bound])
                if any(not torch.equal(p.view(torch.uint8) if p.dtype == torch.bfloat16 else p, y.view(torch.uint8) if y.dtype == torch.bfloat16 else y) for p in gather(y)):
                    out["not_identical"].append([n, str(tdtype), qtype, op, rounding])
                out["cases"] += 1

# Unbiased over repeated calls: the mean error over calls and elements is ~0.
n, calls = 2000, 200
x = torch.randn(n, generator=torch.Generator().manual_seed(rank)) * 3
exact = torch.stack(gather(x)).double().sum(0)
errs = torch.stack([pd.all_reduce(x.clone(), dtype="uint4").double() - exact for _ in range(calls)])
out["mean_error"] = float(errs.mean())
out["sigma_of_mean"] = float(errs.mean(0).std() / n**0.5)  # per-element means are independent across elements
out["max_mean_error_per_element"] = float(errs.mean(0).abs().max())
out["max_single_error"] = float(errs.abs().max())

# Error feedback: with nearest rounding the error of repeated calls would grow
# with the number of calls; with feedback the running total stays within one call's error.
ef = pd.ErrorFeedback()
total_ef = torch.zeros(n, dtype=torch.float64)
total_plain = torch.zeros(n, dtype=torch.float64)
for _ in range(50):
    total_ef += pd.all_reduce(x.clone(), dtype="uint4", rounding="nearest", error_feedback=ef, key="x").double()
    total_plain += pd.all_reduce(x.clone(), dtype="uint4", rounding="nearest").double()
out["ef_total_error"] = float((total_ef - 50 * exact).abs().max())
out["plain_total_error"] = float((total_plain - 50 * exact).abs().max())
out["one_call_error"] = float((pd.all_reduce(x.clone(), dtype="uint4", rounding="nearest").double() - exact).abs().max())
print(json.dumps(out))
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, body: str, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(world), port], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_all_reduce_bound_identity_bias_and_feedback(world):
    results = launch(world, CHECKS)
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    for rank, r in enumerate(results):
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["cases"] == 40
        assert not out["bound_violations"], (rank, out["bound_violations"][:3])
        assert not out["not_identical"], (rank, out["not_identical"][:3])
        if world == 1:
            assert out["max_single_error"] == 0  # nothing to send: the tensor is its own sum
            continue
        assert abs(out["mean_error"]) <= 6 * out["sigma_of_mean"] + 1e-9, out
        # Per element, 200 calls shrink the error well below a single call's.
        assert out["max_mean_error_per_element"] < 0.35 * out["max_single_error"], out
        assert out["ef_total_error"] <= 2 * out["one_call_error"] + 1e-5, out
        assert out["plain_total_error"] > 5 * out["ef_total_error"], out


@pytest.mark.parametrize("peer", ["exits", "hangs"])
def test_a_peer_that_exits_or_hangs_makes_the_others_fail_within_the_timeout(peer):
    body = """
    if rank == 2:
        if "PEER" == "exits":
            import os
            os._exit(0)  # gone before the reduction
        time.sleep(12)  # alive, but never joins the reduction
        sys.exit(0)
    t = time.perf_counter()
    try:
        pd.all_reduce(torch.randn(100_000), timeout=5)
        print("no error")
    except RuntimeError as e:
        print("raised after %.1f s: %s" % (time.perf_counter() - t, str(e).splitlines()[0][:200]))
    """.replace("PEER", peer)
    results = launch(3, body, timeout=120)
    for r in results[:2]:
        line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-500:]
        assert line.startswith("raised after"), line
        assert "piquant.distributed.all_reduce" in line
        assert float(line.split()[2]) < 30


def test_bad_arguments():
    body = """
    for bad in (dict(op="max"), dict(rounding="up"), dict(dtype="float32")):
        try:
            pd.all_reduce(torch.ones(4), **bad)
            print("accepted", bad)
        except (ValueError, TypeError) as e:
            print("ok", type(e).__name__)
    try:
        pd.all_reduce(torch.ones(4, dtype=torch.int32))
    except TypeError:
        print("ok TypeError")
    """
    (r,) = launch(1, body, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split().count("ok") == 4, r.stdout
