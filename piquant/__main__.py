"""python -m piquant info | bench: what piquant runs on, and how fast."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m piquant")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the version, ISA variants, threads and library path")
    bench = sub.add_parser("bench", help="benchmark piquant against torch, pi-quant and the reference, side by side")
    bench.add_argument("--full", action="store_true", help="longer timings and the reference at every size (several minutes)")
    bench.add_argument("--sizes", type=int, nargs="+", metavar="N",
                       help="element counts (default: 64 4096 65536 1048576 27264000); call rows run at 64 and 4096")
    bench.add_argument("--rows", nargs="+", metavar="TEXT",
                       help="only rows (and call rows) whose name contains one of these, e.g. quantize 'f32→uint8'; 'calls': every call row")
    bench.add_argument("--no-pi-quant", action="store_true", help="do not create or use pi-quant's virtual environment")
    bench.add_argument("--pi-quant-python", metavar="PATH", help="python of an existing virtual environment with pypiquant")
    bench.add_argument("--out-dir", default="piquant-bench", help="where bench.json and bench.png go (default: ./piquant-bench)")
    args = parser.parse_args(argv)
    if args.command == "info":
        import piquant

        print(json.dumps(piquant.info(), indent=2))
        return 0
    from . import _bench

    return _bench.main(args)


if __name__ == "__main__":
    sys.exit(main())
