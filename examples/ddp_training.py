"""Train a small model with DistributedDataParallel on local CPU ranks (gloo),
once with DDP's float32 all-reduce and once per piquant communication hook
(uint8; uint4 with error feedback), and plot the loss curves side by side.

    python examples/ddp_training.py [--world 4] [--steps 300] [--png ddp_training.png] [--json losses.json]

Every rank learns a teacher network from its own stream of noisy samples;
the loss shown is the mean squared error against the teacher on a held-out
set (the same on every rank), every 5 steps and after the last. The script checks after each run that the model replicas are identical
on every rank (the hook gives every rank the same bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

MODES = {  # label: hook state arguments (None: DDP's own float32 all-reduce)
    "float32 DDP": None,
    "piquant uint8": {"dtype": "uint8"},
    "piquant uint4 + error feedback": {"dtype": "uint4", "error_feedback": True},
}
DIM, HIDDEN, BATCH, NOISE = 32, 64, 64, 0.1


def net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(DIM, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, HIDDEN),
                               torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1))


def train(rank: int, world: int, state_args: dict | None, steps: int) -> tuple[list[float], bool]:
    """One run: eval losses every step, and whether every rank ends with the same weights."""
    import piquant.distributed as pd

    teacher = net(1234).requires_grad_(False)
    g_eval = torch.Generator().manual_seed(99)
    x_eval = torch.randn(2048, DIM, generator=g_eval)
    y_eval = teacher(x_eval)
    model = DDP(net(0), bucket_cap_mb=0.01)  # several buckets: per-bucket residuals
    if state_args is not None:
        model.register_comm_hook(pd.CommHookState(**state_args), pd.ddp_comm_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(1000 + rank)  # each rank its own samples
    losses = []
    for step in range(steps):
        x = torch.randn(BATCH, DIM, generator=data)
        y = teacher(x) + NOISE * torch.randn(BATCH, 1, generator=data)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if step % 5 == 4 or step == steps - 1:
            with torch.no_grad():
                losses.append(float(torch.nn.functional.mse_loss(model.module(x_eval), y_eval)))
    flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
    replicas = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(replicas, flat)
    return losses, all(torch.equal(r, flat) for r in replicas)


def worker(rank: int, world: int, port: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("PIQUANT_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for label, state_args in MODES.items():
        losses, identical = train(rank, world, state_args, steps)
        results[label] = {"losses": losses, "replicas_identical": identical}
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


def run(world: int, steps: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "losses.json")
        mp.spawn(worker, args=(world, port, steps, out), nprocs=world, join=True)
        with open(out) as f:
            return json.load(f)


def plot(results: dict, path: str, world: int, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, r in results.items():
        n = len(r["losses"])
        ax.plot([min(5 * (i + 1), steps) for i in range(n)], r["losses"], label=f"{label} (final {r['losses'][-1]:.3g})", lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out MSE against the teacher (log)")
    ax.set_title(f"DDP on {world} CPU ranks: float32 all-reduce vs piquant hooks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--png", default="ddp_training.png")
    ap.add_argument("--json", default=None, help="also write the loss curves here")
    a = ap.parse_args()
    results = run(a.world, a.steps)
    base = results["float32 DDP"]["losses"][-1]
    for label, r in results.items():
        print(f"{label:32} final loss {r['losses'][-1]:.5g} ({r['losses'][-1] / base:.3f}x float32), "
              f"replicas identical: {r['replicas_identical']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)
    try:
        plot(results, a.png, a.world, a.steps)
        print(f"wrote {a.png}")
    except ImportError:
        print("(no PNG: matplotlib is not installed)", file=sys.stderr)


if __name__ == "__main__":
    main()
