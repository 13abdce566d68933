"""Where DilationLangevin's trajectories diverge: per adaptation window, and after tuning.

Usage (from the repository root)::

    python -m benchmarks tuning-divergences [--targets ports dimension neal-d10 ...]
        [--seeds 1 2 3] [--output benchmarks/results/tuning_divergences]

For each target (the end-to-end targets, :func:`benchmarks.end_to_end.expand_targets`, and
the funnel suite's names, :mod:`benchmarks.funnels`) and seed: one warm
``pm.sample(step=DilationLangevin(), chains=2, cores=1)`` call of 1000 + 1000 iterations
with the tuning draws kept, and, per chain, the divergent trajectories in each of Stan's
adaptation windows (iterations 0–24, 25–74, 75–174, 175–374, 375–949 and the final
step-size window 950–999), the divergences after tuning, the sampling step size, the min
bulk and tail ESS and the worst mean and sd errors against the reference. The evidence the
step-size target rule of :class:`pymc_dilation.engine.tuning.ChainTuning` was chosen from
(``benchmarks/RESULTS.md``); run it on two commits to compare.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import end_to_end, funnels

__all__ = ["WINDOWS", "measure", "main"]

WINDOWS = ((0, 25), (25, 75), (75, 175), (175, 375), (375, 950), (950, 1000))
"""Stan's adaptation windows for 1000 tuning iterations (the last is the step-size window)."""


def _targets(names: Sequence[str]) -> list[str]:
    funnel = [name for name in names if funnels.is_target(name)]
    return funnel + end_to_end.expand_targets(
        [name for name in names if not funnels.is_target(name)]
    )


def measure(name: str, model, seed: int) -> dict:
    """One warm call: divergences per window and chain, and the result's quality."""
    import pymc as pm

    from pymc_dilation import DilationLangevin
    from pymc_dilation._compat import group_dataset

    start = time.perf_counter()
    with model:
        idata = pm.sample(
            1000, tune=1000, chains=2, cores=1, random_seed=seed, progressbar=False,
            compute_convergence_checks=False, step=DilationLangevin(),
            discard_tuned_samples=False,
        )  # fmt: skip
    wall = time.perf_counter() - start
    tuning = np.asarray(group_dataset(idata, "warmup_sample_stats")["diverging"])
    sampling = group_dataset(idata, "sample_stats")
    if funnels.is_target(name):
        errors = funnels.moment_errors(idata, name)
    else:
        errors = end_to_end._moment_errors(name, idata)
    bulk, tail = end_to_end._min_ess(idata)
    return {
        "target": name,
        "seed": seed,
        "wall_s": round(wall, 2),
        "windows": [[int(chain[a:b].sum()) for a, b in WINDOWS] for chain in tuning],
        "after_tuning": np.asarray(sampling["diverging"]).sum(axis=1).tolist(),
        "step_size": np.asarray(sampling["step_size"])[:, 0].round(4).tolist(),
        "min_ess": [round(bulk), round(tail)],
        "errors": [round(errors["mean_err"], 3), round(errors["sd_err"], 3)],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks tuning-divergences ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks tuning-divergences", description=__doc__
    )
    parser.add_argument("--targets", nargs="+", default=["ports", "dimension", "neal-d10"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--output", default="benchmarks/results/tuning_divergences")
    args = parser.parse_args(argv)
    import pymc  # noqa: F401  (before quieting its logger, which importing it configures)

    warnings.simplefilter("ignore")
    logging.getLogger("pymc").setLevel(logging.ERROR)
    output = Path(args.output).with_suffix(".jsonl")
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as out:
        for name in _targets(args.targets):
            build = funnels.build_model if funnels.is_target(name) else end_to_end.build_model
            model = build(name)
            for seed in args.seeds:
                row = measure(name, model, seed)
                print(json.dumps(row), flush=True)
                out.write(json.dumps(row) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
