"""``python -m benchmarks population-cost``: what DilationLangevin's tuning population costs.

For each target, four chains (``pm.sample(5, tune=5, chains=4, cores=1)``, warm: each
configuration runs twice and the second run is kept) time the tuning population of each
chain (``DilationLangevin._map_modes``: the Laplace step, the population, the map and its
weights) and count its gradient evaluations (``mode_map.n_grad``), with the probe before the
annealing off and on (``pymc_dilation.step.PROBE``).

Example (the table in ``benchmarks/RESULTS.md``)::

    python -m benchmarks population-cost --targets eight_schools ports regressions
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pymc as pm

import pymc_dilation.step as step_module
from benchmarks import end_to_end
from pymc_dilation import DilationLangevin


def measure(model, probe: bool, seed: int = 7) -> dict:
    """Seconds and gradients of the tuning population, per chain, and the modes mapped."""
    spent: dict[str, list] = {"seconds": [], "grads": [], "modes": []}
    original = step_module.DilationLangevin._map_modes

    def timed(self, x, extra):
        start = time.perf_counter()
        out = original(self, x, extra)
        spent["seconds"].append(time.perf_counter() - start)
        spent["grads"].append(self.mode_map.n_grad)
        spent["modes"].append(self.mode_map.n_modes)
        return out

    saved = step_module.PROBE
    step_module.PROBE = probe
    step_module.DilationLangevin._map_modes = timed
    try:
        with model:
            pm.sample(
                5, tune=5, chains=4, cores=1, random_seed=seed, progressbar=False,
                compute_convergence_checks=False, step=DilationLangevin(),
            )  # fmt: skip
    finally:
        step_module.DilationLangevin._map_modes = original
        step_module.PROBE = saved
    return {
        "ms": 1000 * float(np.mean(spent["seconds"])),
        "grads": float(np.mean(spent["grads"])),
        "modes": spent["modes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks population-cost")
    parser.add_argument("--targets", nargs="+", default=["eight_schools", "ports", "regressions"])
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.getLogger("pymc").setLevel(logging.ERROR)
    print(
        "| target | without probe: ms / gradients per chain | with probe | modes per chain "
        "(with) |\n|---|---|---|---|"
    )
    for target in end_to_end.expand_targets(args.targets):
        model = end_to_end.build_model(target)
        runs = {}
        for probe in (False, True, False, True):  # the second of each is warm
            runs[probe] = measure(model, probe)
        off, on = runs[False], runs[True]
        print(
            f"| {target} | {off['ms']:.0f} / {off['grads']:.0f} | {on['ms']:.0f} / "
            f"{on['grads']:.0f} | {on['modes']} |",
            flush=True,
        )
    return 0
