"""``python -m benchmarks unimodal-overhead``: what the mode map costs on a unimodal posterior.

Issue 11 asks that a unimodal posterior cost no more than the step did before it mapped
modes (5 % at most) and that eight schools' ESS per second not drop. The kernels have changed
since that step (issue 12), so the comparison is an ablation with today's kernels:
``WithoutModeMap`` is ``DilationLangevin`` with the mode map taken out (no tuning
population, no growth checks, no end-of-tuning checks, no jumps): each chain starts at the
Laplace approximation's mode found from its start point (computed once for the chains that
share a start, as ``DilationLangevin`` does), preconditioned by its curvature, and adapts as
``DilationLangevin`` does. The tuning population draws from a stream of its own (see
``pymc_dilation.step.tuning_stream``), so where it leaves the chain at that optimum with that
curvature both variants give the same draws, and the ratios are the population's time alone.

For each target and seed, both run ``pm.sample(draws, tune=tune, chains, cores=1,
random_seed=seed)`` warm (after one untimed short run each), one after the other. Reported:
the mean over seeds of the smallest bulk ESS, the median wall time of the whole call (step
built inside), the median of the step's own seconds (the sum of ``perf_counter_diff``, less
noisy than the wall) and the mean of ESS per second of wall, with the ratios of
``DilationLangevin`` to the ablation.

Example (the table in ``benchmarks/RESULTS.md``)::

    python -m benchmarks unimodal-overhead --targets eight_schools kidiq-kidscore_momiq \\
        arK-arK sblrc-blr --seeds 1 2 3 4 5 6 7 8
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import numpy as np
import pymc as pm

from benchmarks import end_to_end
from pymc_dilation import DilationLangevin
from pymc_dilation._compat import group_dataset
from pymc_dilation.engine.modes import ModeMap
from pymc_dilation.engine.population import PopulationTarget
from pymc_dilation.engine.weights import WeightEstimate


class WithoutModeMap(DilationLangevin):
    """``DilationLangevin`` without the mode map: one mode, the Laplace approximation's."""

    def _map_modes(self, x, extra):
        dim = self._logp.dim
        target = PopulationTarget(dim, self._logp.batch_callable(extra), self._logp.point_fn, extra)
        laplace = self._laplace_at(target, x, extra)  # shared by chains with one start
        location = laplace.mode[None]
        modes = ModeMap(location, location.copy(), laplace.root[None], np.zeros(1),
                        np.zeros(1, dtype=int), 0)  # fmt: skip
        one = WeightEstimate(np.ones(1), np.zeros(1), 0.0, 0.0, np.zeros(1), 1.0)
        self._map.adopt(modes, one, 0.0, laplace.n_grad)
        self._map.uncovered = lambda iteration, x, lp: False  # no growth checks
        self._set_metric(self._first_metric(laplace.root))
        lp, grad = self._logp.logp_grad(laplace.mode, extra)
        return (laplace.mode.copy(), float(lp), np.asarray(grad, dtype=float)), laplace.n_grad + 1


VARIANTS = {"DilationLangevin": DilationLangevin, "without mode map": WithoutModeMap}


def measure(model, step_class, seed: int, draws: int, tune: int, chains: int) -> dict:
    """One warm call: wall seconds, the step's own seconds and the smallest bulk ESS."""
    start = time.perf_counter()
    with model:
        idata = pm.sample(
            draws, tune=tune, chains=chains, cores=1, random_seed=seed, progressbar=False,
            compute_convergence_checks=False, step=step_class(),
            discard_tuned_samples=False,
        )  # fmt: skip
    wall = time.perf_counter() - start
    step_seconds = sum(
        float(np.asarray(group_dataset(idata, group)["perf_counter_diff"]).sum())
        for group in ("warmup_sample_stats", "sample_stats")
    )
    return {"wall": wall, "step": step_seconds, "ess": end_to_end._min_ess(idata)[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks unimodal-overhead")
    parser.add_argument("--targets", nargs="+", default=["eight_schools"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    for logger in ("pymc", "arviz"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    print(
        f"{pm.__version__=}, {args.chains} chains x ({args.tune} + {args.draws}), seeds "
        f"{args.seeds}\n\n| target | sampler | mean min bulk ESS | median wall (s) | median step "
        "(s) | mean ESS/s | ESS/s ratio | step-time ratio |\n|---|---|---|---|---|---|---|---|"
    )
    for target in end_to_end.expand_targets(args.targets):
        model = end_to_end.build_model(target)
        for step_class in VARIANTS.values():  # compile and warm the caches
            measure(model, step_class, 0, 20, 20, 1)
        runs = {name: [] for name in VARIANTS}
        for seed in args.seeds:
            for name, step_class in VARIANTS.items():
                runs[name].append(
                    measure(model, step_class, seed, args.draws, args.tune, args.chains)
                )
        summary = {
            name: {
                "ess": statistics.mean(r["ess"] for r in rows),
                "wall": statistics.median(r["wall"] for r in rows),
                "step": statistics.median(r["step"] for r in rows),
                "ess_per_s": statistics.mean(r["ess"] / r["wall"] for r in rows),
            }
            for name, rows in runs.items()
        }
        base = summary["without mode map"]
        for name, s in summary.items():
            print(
                f"| {target} | {name} | {s['ess']:.0f} | {s['wall']:.2f} | {s['step']:.2f} | "
                f"{s['ess_per_s']:.0f} | {s['ess_per_s'] / base['ess_per_s']:.2f} | "
                f"{s['step'] / base['step']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
