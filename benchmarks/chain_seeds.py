"""``python -m benchmarks chain-seeds``: DilationLangevin chains on many seeds of mode-rich targets.

Every chain must visit every mode in proportion to its mass (issue 11), on targets and seeds
no default was chosen on. For each target and seed: ``pm.sample(draws, tune=tune, chains,
cores=1, random_seed=seed, step=DilationLangevin(steps_per_draw=steps))`` (``--steps``
defaults to the step's own: the HMC kernel's adapted trajectory), scored by the
pooled mode-weight TV, the worst chain's own TV, the largest R-hat, the smallest bulk ESS
and each chain's jump acceptance (NaN: the chain proposed no jumps). A chain stuck in one mode
shows as a worst-chain TV near that mode's missing mass and an R-hat above 1.05.

Example (the held-out table in ``benchmarks/RESULTS.md``)::

    python -m benchmarks chain-seeds --targets rand2d-1 rand2d-2 rand2d-3 --seeds 3 4 5 \\
        --output benchmarks/results/chain_seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import numpy as np
import pymc as pm

from benchmarks import runner
from pymc_dilation import DilationLangevin


def run_one(target: str, seed: int, draws: int, tune: int, chains: int, steps: int | None) -> dict:
    """One target and seed; returns its row."""
    model = runner._build(target)
    start = time.perf_counter()
    with model:
        idata = pm.sample(
            draws, tune=tune, chains=chains, cores=1, random_seed=seed, progressbar=False,
            compute_convergence_checks=False, step=DilationLangevin(steps_per_draw=steps),
        )  # fmt: skip
    wall = time.perf_counter() - start
    acceptance = np.nanmean(np.asarray(idata.sample_stats["jump_acceptance"], float), axis=1)
    chains = runner._chain_scores(target, idata)
    return {
        "target": target,
        "seed": seed,
        "pooled_tv": runner._score(target, idata).get("tv", float("nan")),
        "worst_chain_tv": chains.get("chain_tv_max", float("nan")),
        "max_rhat": chains.get("max_rhat", float("nan")),
        "min_ess_bulk": runner._min_bulk_ess(idata),
        "jump_acceptance": [round(float(a), 2) for a in acceptance],
        "wall_s": wall,
    }


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| target | seed | pooled TV | worst chain's TV | R-hat | min bulk ESS | jump acceptance"
        " per chain | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = ", ".join("none" if np.isnan(a) else f"{a:.2f}" for a in r["jump_acceptance"])
        lines.append(
            f"| {r['target']} | {r['seed']} | {r['pooled_tv']:.3f} | {r['worst_chain_tv']:.3f} "
            f"| {r['max_rhat']:.3f} | {r['min_ess_bulk']:.0f} | {acc} | {r['wall_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks chain-seeds")
    parser.add_argument("--targets", nargs="+", default=[f"rand2d-{k}" for k in range(1, 9)])
    parser.add_argument("--seeds", nargs="+", type=int, default=[3, 4, 5])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument(
        "--steps", type=int, default=None, help="steps_per_draw (default: the step's own)"
    )
    parser.add_argument("--output", default=None, help="path stem for .md and .json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.getLogger("pymc").setLevel(logging.ERROR)
    rows = []
    for target in args.targets:
        for seed in args.seeds:
            rows.append(run_one(target, seed, args.draws, args.tune, args.chains, args.steps))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print(table)
    if args.output:
        with open(f"{args.output}.md", "w") as f:
            f.write(table)
        with open(f"{args.output}.json", "w") as f:
            json.dump(rows, f, indent=1)
    return 0
