"""python -m piquant info: what piquant runs on."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m piquant")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the version, ISA variants, threads and library path")
    args = parser.parse_args(argv)
    if args.command == "info":
        import piquant

        print(json.dumps(piquant.info(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
