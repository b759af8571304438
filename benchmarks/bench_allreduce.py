"""All-reduce of float32 values across local processes (gloo): torch's
float32 all_reduce against piquant.distributed.all_reduce with uint8 and
uint4, in one run, over a link shaped to 1 or 10 Gbit/s or unshaped loopback.

    python benchmarks/bench_allreduce.py --link 10gbit [--numel 27264000] [--world 4] [--repeats 5] [--piece-bytes B] [--png out.png]

A shaped link runs the ranks in a private network namespace (``unshare -n``)
whose loopback is shaped with ``tc qdisc add dev lo root tbf rate R burst
1mb latency 100ms`` — one token bucket shared by every rank, as a switch
port would be. That needs root (or CAP_NET_ADMIN) and iproute2's ``tc``.
The methods take turns, run after run. Prints per method the median wall
time, the ratio to torch, the bytes each rank sends, the error against the
exact (float64) sum, and for piquant the median split of rank 0's ring into
computing (quantize, dequantize-add, posting transfers: wall time not spent
blocked on a transfer) and waiting for transfers, and the CPU time of its
calling thread (compute above it means the rank was waiting for a core);
writes a PNG of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys

RATES = {"1gbit": "1gbit", "10gbit": "10gbit", "none": None}
INNER = "PIQUANT_BENCH_IN_NETNS"

WORKER = r"""
import json, sys, time, statistics, torch, torch.distributed as dist
import piquant, piquant.distributed as pd
rank, world, port, n, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if int(sys.argv[6]):
    pd.PIECE_BYTES = int(sys.argv[6])
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
x = torch.randn(n, generator=torch.Generator().manual_seed(rank))
exact = x.double()
for r in range(world):  # the exact sum, in float64, from every rank's seed
    if r != rank:
        exact += torch.randn(n, generator=torch.Generator().manual_seed(r)).double()
methods = {"torch f32": lambda y, p: dist.all_reduce(y),
           "piquant uint8": lambda y, p: pd.all_reduce(y, dtype="uint8", profile=p),
           "piquant uint4": lambda y, p: pd.all_reduce(y, dtype="uint4", profile=p)}
times = {name: [] for name in methods}
profiles = {name: [] for name in methods}
results = {}
for rep in range(repeats + 1):  # the methods take turns, so a change of load hits all; run 0 warms up
    for name, run in methods.items():
        y, p = x.clone(), {}
        dist.barrier()
        t = time.perf_counter()
        run(y, p)
        if rep:
            times[name].append(time.perf_counter() - t)
            profiles[name].append(p)
        results[name] = y
res = {}
for name in methods:
    err = results[name].double() - exact
    res[name] = {"median_s": statistics.median(times[name]), "max_abs_error": float(err.abs().max()),
                 "rms_error": float(err.pow(2).mean().sqrt()), "rms_of_sum": float(exact.pow(2).mean().sqrt())}
    if profiles[name][0]:
        for k in ("compute_seconds", "wait_seconds", "cpu_seconds", "bytes_sent"):
            res[name][k] = statistics.median(p[k] for p in profiles[name])
if rank == 0:
    print(json.dumps(res))
dist.destroy_process_group()
"""


def fail(msg: str) -> None:
    print(f"bench_allreduce: {msg}", file=sys.stderr)
    sys.exit(2)


def enter_shaped_namespace(rate: str) -> None:
    """Re-run this script in a private network namespace, or exit with why not."""
    if os.environ.get(INNER):
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "1mb", "latency", "100ms"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                fail(f"`{' '.join(cmd)}` failed in the namespace: {r.stderr.strip()}")
        return
    if shutil.which("unshare") is None or shutil.which("tc") is None or shutil.which("ip") is None:
        fail("a shaped link needs unshare (util-linux), ip and tc (iproute2): apt-get install -y iproute2")
    if os.geteuid() != 0:
        fail("a shaped link needs root (unshare -n and tc); run as root or use --link none")
    r = subprocess.run(["unshare", "-n", sys.executable, *sys.argv], env={**os.environ, INNER: "1"})
    sys.exit(r.returncode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--link", choices=sorted(RATES), default="none")
    ap.add_argument("--numel", type=int, default=27_264_000)
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--piece-bytes", type=int, default=0, help="piquant.distributed.PIECE_BYTES (default: its own)")
    ap.add_argument("--png", default=None, help="chart path (default: bench_allreduce_<link>.png)")
    a = ap.parse_args()
    if a.numel < 1 or a.world < 2 or a.repeats < 1:
        fail("--numel, --repeats must be >= 1 and --world >= 2")
    if RATES[a.link]:
        enter_shaped_namespace(RATES[a.link])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One thread per process for piquant as for torch: the processes share this machine's cores.
    env = {**os.environ, "PIQUANT_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(a.world), str(port), str(a.numel), str(a.repeats), str(a.piece_bytes)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for r in range(a.world)]
    done = [p.communicate() for p in procs]  # stderr: c10d's warnings, shown only if a rank fails
    outs = [o for o, _ in done]
    if any(p.returncode for p in procs):
        fail(f"a rank failed (exit codes {[p.returncode for p in procs]}):\n" + next(e for p, (_, e) in zip(procs, done) if p.returncode)[-2000:])
    res = json.loads(outs[0].strip().splitlines()[-1])
    w, n = a.world, a.numel
    sent = {"torch f32": 2 * (w - 1) / w * 4 * n}  # a ring's volume; gloo's algorithm may differ
    base = res["torch f32"]["median_s"]
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"all-reduce of {n:,} float32 values, {w} local processes (gloo), link: {a.link}, "
          f"medians of {a.repeats}, load average {load}")
    print(f"{'method':14} {'median':>10} {'vs torch':>9} {'MB sent/rank':>13} {'compute':>10} {'wait':>10} {'cpu':>10} "
          f"{'max |error|':>12} {'rms err/rms sum':>16}")
    for name, r in res.items():
        mb = r.get("bytes_sent", sent.get(name, 0)) / 1e6
        split = (f"{r['compute_seconds'] * 1e3:7.1f} ms {r['wait_seconds'] * 1e3:7.1f} ms {r['cpu_seconds'] * 1e3:7.1f} ms"
                 if "compute_seconds" in r else f"{'':>10} {'':>10} {'':>10}")
        print(f"{name:14} {r['median_s'] * 1e3:7.1f} ms {base / r['median_s']:8.2f}x {mb:13.1f} {split} "
              f"{r['max_abs_error']:12.4g} {r['rms_error'] / r['rms_of_sum']:16.3g}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no PNG: matplotlib is not installed)")
        return
    png = a.png or f"bench_allreduce_{a.link}.png"
    names = list(res)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.barh(names, [res[k]["median_s"] * 1e3 for k in names], color=["#888", "#3a7", "#27c"][: len(names)])
    for i, k in enumerate(names):
        ax.text(res[k]["median_s"] * 1e3, i, f" {base / res[k]['median_s']:.2f}x", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("median ms (lower is better)")
    ax.set_title(f"all-reduce of {n:,} float32, {w} ranks, link {a.link}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
