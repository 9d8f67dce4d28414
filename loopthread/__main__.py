"""``python -m loopthread demo``: the main job that ``make demo`` runs."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m loopthread")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a small sync application that uses loopthread")
    demo.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from loopthread._demo import run_demo

        return run_demo(metrics_port=args.metrics_port)
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
