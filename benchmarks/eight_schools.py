"""Eight schools (non-centered): DilationLangevin vs PyMC NUTS vs nutpie, min bulk ESS per second.

Usage::

    python -m benchmarks.eight_schools [--draws 1000] [--tune 1000] [--chains 4] [--repeats 3]
        [--steps-per-draw 1 2 4 8 16]

Every sampler runs once untimed first (compilation, caches), then ``--repeats`` timed runs with
different seeds, all with the same draws, tuning and chains, one core. ESS is ArviZ's bulk ESS,
minimised over the parameters (mu, tau, theta_trans); time is the wall time of ``pm.sample``.
Reports the median over repeats and the ratio of each to PyMC's NUTS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import arviz as az
import numpy as np
import pymc as pm

from benchmarks.posteriordb import build_model, moment_errors
from pymc_dilation import DilationLangevin

NAME = "eight_schools-eight_schools_noncentered"
PARAMS = ["mu", "tau", "theta_trans"]


def min_bulk_ess(idata) -> float:
    ess = az.ess(idata, var_names=PARAMS, method="bulk")
    return float(min(np.min(np.asarray(ess[v])) for v in PARAMS))


def run(sampler: str, model, draws, tune, chains, seed, steps_per_draw=None) -> dict:
    kwargs = dict(
        draws=draws, tune=tune, chains=chains, cores=1, random_seed=seed, progressbar=False,
        compute_convergence_checks=False,
    )  # fmt: skip
    with model:
        start = time.perf_counter()
        if sampler == "dilation":
            step = DilationLangevin(steps_per_draw=steps_per_draw)
            build = time.perf_counter() - start
            start = time.perf_counter()
            idata = pm.sample(step=step, **kwargs)
        else:
            build = 0.0
            idata = pm.sample(nuts_sampler=sampler, **kwargs)
        wall = time.perf_counter() - start
    errors = moment_errors(idata, NAME)
    ess = min_bulk_ess(idata)
    n_div = int(np.asarray(idata.sample_stats["diverging"]).sum())
    return {
        "wall_s": wall,
        "build_s": build,
        "min_ess_bulk": ess,
        "ess_per_s": ess / wall,
        "worst_mean_err": max(e["mean_err"] for e in errors),
        "worst_sd_err": max(e["sd_err"] for e in errors),
        "divergences": n_div,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps-per-draw", type=int, nargs="+", default=[16])
    parser.add_argument("--no-nutpie", action="store_true")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)

    model = build_model(NAME)
    configs = [("pymc", None)]
    if not args.no_nutpie:
        configs.append(("nutpie", None))
    configs += [("dilation", k) for k in args.steps_per_draw]
    rows = []
    for sampler, k in configs:
        run(sampler, model, 50, 50, 1, 0, k)  # compile and warm caches
        reps = [
            run(sampler, model, args.draws, args.tune, args.chains, 100 + r, k)
            for r in range(args.repeats)
        ]
        row = {key: statistics.median(r[key] for r in reps) for key in reps[0]}
        row["sampler"] = sampler if k is None else f"DilationLangevin(steps_per_draw={k})"
        rows.append(row)
        print(row, flush=True)
    nuts = rows[0]["ess_per_s"]
    print(f"\n{pm.__version__=}, draws={args.draws}, tune={args.tune}, chains={args.chains}")
    print("| sampler | wall s | min bulk ESS | ESS/s | ratio to PyMC NUTS | worst mean err (sd) "
          "| worst sd err | divergences |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['sampler']} | {row['wall_s']:.2f} | {row['min_ess_bulk']:.0f} | "
            f"{row['ess_per_s']:.0f} | {row['ess_per_s'] / nuts:.1f} | "
            f"{row['worst_mean_err']:.3f} | {row['worst_sd_err']:.3f} | {row['divergences']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
