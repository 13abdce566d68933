"""Command line: ``python -m pymc_dilation demo --output DIR`` (also ``pymc-dilation demo``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pymc-dilation`` command.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="pymc-dilation",
        description="Annealed Langevin sampling along the dilation path for PyMC models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="DilationLangevin, sample_dilation and NUTS on a two-mode posterior, with figures",
        description=(
            "Sample a 2-D two-mode posterior (mode weights 0.2/0.8) with DilationLangevin, "
            "PyMC's NUTS and sample_dilation; print a comparison table and write PNG figures."
        ),
    )
    demo.add_argument(
        "--output",
        "-o",
        default="demo-output",
        help="directory for the figures (default: %(default)s)",
    )
    demo.add_argument("--fast", action="store_true", help="a smaller run (used by the tests)")
    demo.add_argument("--seed", type=int, default=2024, help="random seed (default: %(default)s)")
    demo.add_argument("--no-progressbar", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pymc_dilation`` and the ``pymc-dilation`` script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from pymc_dilation.demo import run_demo

        run_demo(
            args.output, fast=args.fast, random_seed=args.seed, progressbar=not args.no_progressbar
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
