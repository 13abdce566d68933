"""Check the PyMC ports of the posteriordb reference posteriors with PyMC's NUTS.

Run from the repository root::

    python -m benchmarks.check_ports                    # all eight posteriors
    python -m benchmarks.check_ports arK-arK sblrc-blr  # a subset

Each port is sampled with ``pm.sample`` (PyMC's own NUTS, one core) and its posterior means and
sds are compared with the reference draws. A port passes when, for every reference parameter,
``|mean - ref_mean| / ref_sd <= tol`` and ``|sd / ref_sd - 1| <= tol``. The exit status is 1
if any port fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pymc as pm

from benchmarks.posteriordb import POSTERIOR_NAMES, build_model, moment_errors

DEFAULT_TOL = 0.15


def _divergences(idata: Any) -> int:
    """Number of divergent transitions in ``idata`` (-1 when not recorded)."""
    try:
        return int(np.asarray(idata.sample_stats["diverging"].values).sum())
    except (AttributeError, KeyError):
        return -1


def check_port(
    name: str,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    seed: int = 20240531,
    target_accept: float = 0.8,
    tol: float = DEFAULT_TOL,
) -> dict[str, Any]:
    """Sample one port with PyMC NUTS and compare its moments with the reference.

    Parameters
    ----------
    name : str
        One of :data:`benchmarks.posteriordb.POSTERIOR_NAMES`.
    draws, tune, chains : int
        Passed to ``pm.sample`` (always with ``cores=1``).
    seed : int
        ``random_seed`` for ``pm.sample``.
    target_accept : float
        NUTS target acceptance rate.
    tol : float
        Tolerance on both the standardised mean error and the relative sd error.

    Returns
    -------
    dict
        ``name``, ``rows`` (from :func:`benchmarks.posteriordb.moment_errors`), the worst
        ``mean_err``/``sd_err`` and their parameters, ``divergences``, ``seconds``, ``passed``.
    """
    model = build_model(name)
    start = time.perf_counter()
    with model:
        idata = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=1,
            random_seed=seed,
            target_accept=target_accept,
            nuts_sampler="pymc",  # PyMC 6 would otherwise pick nutpie when installed
            progressbar=False,
            compute_convergence_checks=False,
        )
    seconds = time.perf_counter() - start
    rows = moment_errors(idata, name)
    worst_mean = max(rows, key=lambda r: r["mean_err"])
    worst_sd = max(rows, key=lambda r: r["sd_err"])
    return {
        "name": name,
        "rows": rows,
        "mean_err": worst_mean["mean_err"],
        "mean_err_param": worst_mean["name"],
        "sd_err": worst_sd["sd_err"],
        "sd_err_param": worst_sd["name"],
        "divergences": _divergences(idata),
        "seconds": seconds,
        "passed": worst_mean["mean_err"] <= tol and worst_sd["sd_err"] <= tol,
    }


def _format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"    {'param':<12} {'ref_mean':>11} {'mean':>11} {'ref_sd':>10} {'sd':>10} "
        f"{'mean_err':>8} {'sd_err':>7}"
    ]
    for r in rows:
        lines.append(
            f"    {r['name']:<12} {r['ref_mean']:>11.4g} {r['mean']:>11.4g} {r['ref_sd']:>10.4g} "
            f"{r['sd']:>10.4g} {r['mean_err']:>8.3f} {r['sd_err']:>7.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="posteriors to check (default: all)")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20240531)
    parser.add_argument("--target-accept", type=float, default=0.8)
    parser.add_argument("--tol", type=float, default=DEFAULT_TOL)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every parameter")
    args = parser.parse_args(argv)

    names = args.names or list(POSTERIOR_NAMES)
    unknown = [n for n in names if n not in POSTERIOR_NAMES]
    if unknown:
        parser.error(f"unknown posterior(s) {unknown}; choose from {list(POSTERIOR_NAMES)}")

    results = []
    for name in names:
        print(f"sampling {name} ...", file=sys.stderr, flush=True)
        result = check_port(
            name,
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            seed=args.seed,
            target_accept=args.target_accept,
            tol=args.tol,
        )
        results.append(result)
        if args.verbose:
            print(name)
            print(_format_rows(result["rows"]), flush=True)

    header = (
        f"{'posterior':<40} {'worst mean_err':>22} {'worst sd_err':>22} {'div':>5} "
        f"{'time [s]':>9}  result"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        mean_cell = f"{r['mean_err']:.3f} ({r['mean_err_param']})"
        sd_cell = f"{r['sd_err']:.3f} ({r['sd_err_param']})"
        print(
            f"{r['name']:<40} {mean_cell:>22} {sd_cell:>22} {r['divergences']:>5} "
            f"{r['seconds']:>9.1f}  {'PASS' if r['passed'] else 'FAIL'}"
        )
    n_failed = sum(not r["passed"] for r in results)
    n_passed = len(results) - n_failed
    print(f"\n{n_passed}/{len(results)} passed (tol {args.tol} on mean_err and sd_err)")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
