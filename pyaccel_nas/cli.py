"""The ``pyaccel-nas`` command line.

    pyaccel-nas info          versions, compiled kernels per op and device, and why an op would fall back
"""

from __future__ import annotations

import argparse
import json
import sys


def _info(args: argparse.Namespace) -> int:
    from pyaccel_nas import info

    report = info()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lib = report["library"]
    print(f"pyaccel_nas {report['pyaccel_nas']}  torch {report['torch']}  CUDA {report['torch_cuda'] or '-'}  "
          f"GPU available: {report['cuda_available']}  threads: {report['threads']}")
    print(f"compiled library: {lib['path'] if lib['loaded'] else 'NOT LOADED: ' + lib['error']}")
    for op, entry in report["ops"].items():
        kernels = ", ".join(device for device, present in entry["kernels"].items() if present) or "none"
        print(f"  {op:<14} kernels: {kernels}")
        for device, reason in entry["fallback"].items():
            print(f"  {'':<14} {device}: reference implementation, because {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyaccel-nas", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="versions, compiled kernels and fallbacks")
    info.add_argument("--json", action="store_true", help="print the full report as JSON")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
