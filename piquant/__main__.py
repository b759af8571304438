"""python -m piquant info | bench | gguf quantize: what piquant runs on, how fast, and GGUF model files."""

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
    gguf = sub.add_parser("gguf", help="GGUF model files").add_subparsers(dest="gguf_command", required=True)
    gq = gguf.add_parser("quantize", help="quantize a GGUF model file as llama.cpp's quantizer does (same tensor types and bytes)")
    gq.add_argument("src", help="GGUF file with float32/float16/bfloat16 tensors")
    gq.add_argument("dst", help="GGUF file to write (written whole or not at all)")
    gq.add_argument("--type", required=True, metavar="FTYPE", dest="ftype",
                    help="file type: " + ", ".join(_file_types()))
    gq.add_argument("--threads", type=int, metavar="N", help="threads (default: piquant's default, PIQUANT_NUM_THREADS or all CPUs)")
    gq.add_argument("--force", action="store_true", help="replace DST if it exists")
    gq.add_argument("--no-progress", action="store_true", help="no progress bars (there are none when stderr is not a terminal)")
    args = parser.parse_args(argv)
    if args.command == "gguf":
        return _gguf_quantize(args)
    if args.command == "info":
        import piquant

        print(json.dumps(piquant.info(), indent=2))
        return 0
    from . import _bench

    return _bench.main(args)


def _file_types() -> list[str]:
    from ._gguf_file import FILE_TYPES

    return list(FILE_TYPES)


def _gguf_quantize(args: argparse.Namespace) -> int:
    """One line on stderr and exit status 1 for bad input, never a traceback."""
    from ._gguf_file import quantize_file

    try:
        quantize_file(args.src, args.dst, args.ftype, threads=args.threads, progress=not args.no_progress and sys.stderr.isatty(), force=args.force)
    except (ValueError, OSError, ImportError) as e:
        print(f"python -m piquant gguf quantize: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("python -m piquant gguf quantize: interrupted (nothing written)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
