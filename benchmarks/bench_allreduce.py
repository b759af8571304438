"""All-reduce of 27,264,000 float32 values across 4 local processes (gloo,
127.0.0.1): piquant.distributed.all_reduce with uint8 and uint4 against
torch.distributed.all_reduce in float32, in one run. Prints, per method, the
median wall time, the bytes each rank sends, and the error against the exact
(float64) sum.

    python benchmarks/bench_allreduce.py [--numel 27264000] [--world 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

WORKER = r"""
import json, sys, time, statistics, torch, torch.distributed as dist
import piquant, piquant.distributed as pd
rank, world, port, n, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
x = torch.randn(n, generator=torch.Generator().manual_seed(rank))
exact = x.double()
for r in range(world):  # the exact sum, in float64, from every rank's seed
    if r != rank:
        exact += torch.randn(n, generator=torch.Generator().manual_seed(r)).double()
res = {}
for name, run in (("torch f32", lambda y: dist.all_reduce(y)),
                  ("piquant uint8", lambda y: pd.all_reduce(y, dtype="uint8")),
                  ("piquant uint4", lambda y: pd.all_reduce(y, dtype="uint4"))):
    times = []
    for _ in range(repeats):
        y = x.clone()
        dist.barrier()
        t = time.perf_counter()
        run(y)
        times.append(time.perf_counter() - t)
    err = (y.double() - exact)
    res[name] = {"median_s": statistics.median(times), "max_abs_error": float(err.abs().max()),
                 "rms_error": float(err.pow(2).mean().sqrt()), "rms_of_sum": float(exact.pow(2).mean().sqrt())}
if rank == 0:
    print(json.dumps(res))
dist.destroy_process_group()
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--numel", type=int, default=27_264_000)
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One thread per process for piquant as for torch: the processes share this machine's cores.
    env = {**os.environ, "PIQUANT_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(a.world), str(port), str(a.numel), str(a.repeats)],
                              stdout=subprocess.PIPE, text=True, env=env) for r in range(a.world)]
    outs = [p.communicate()[0] for p in procs]
    res = json.loads(outs[0].strip().splitlines()[-1])
    w, n = a.world, a.numel
    # A ring all-reduce sends 2(W-1)/W of the data per rank; piquant adds 16 bytes per message.
    sent = {"torch f32": 2 * (w - 1) / w * 4 * n, "piquant uint8": 2 * (w - 1) / w * n + 2 * (w - 1) * 16,
            "piquant uint4": 2 * (w - 1) / w * n / 2 + 2 * (w - 1) * 16}
    base = res["torch f32"]["median_s"]
    print(f"all-reduce of {n:,} float32 values, {w} local processes (gloo, 127.0.0.1), medians of {a.repeats}")
    print(f"{'method':16} {'median':>10} {'vs torch':>9} {'MB sent/rank':>13} {'max |error|':>12} {'rms error / rms sum':>20}")
    for name, r in res.items():
        print(f"{name:16} {r['median_s'] * 1e3:8.1f} ms {base / r['median_s']:8.2f}x {sent[name] / 1e6:13.1f} "
              f"{r['max_abs_error']:12.4g} {r['rms_error'] / r['rms_of_sum']:20.3g}")
    print("(torch's gloo all_reduce moves about the ring's volume; piquant's figure is exact for its ring)")


if __name__ == "__main__":
    main()
