"""The paper's claim on 2-D mixtures: the dilation path recovers mode weights, the others do not.

Usage (from the repository root)::

    python -m benchmarks paper [--budget 200] [--particles 2000] [--seeds 5]

Every method gets the same number of gradient evaluations per particle (``--budget``, within a
level's worth) and the same step-size rule, on two 2-D targets given as NumPy log densities:
``mix2d`` of the multimodal suite (weights 0.2 / 0.8 at (±5, 0)) and ``mix2d_four`` (weights
0.1 / 0.2 / 0.3 / 0.4 at (±6, ±6)). Methods, all unadjusted Langevin as in the paper unless
named otherwise:

- ``dilation (anneal only)``: the dilation path from a Dirac at the origin;
- ``geometric σ0=1`` / ``σ0=10``: the geometric path from ``N(0, σ0² I)``;
- ``plain σ0=1`` / ``σ0=10``: Langevin on the target from ``N(0, σ0² I)``;
- ``sample_logdensity``: the full sampler (annealing, then exact refinement), at its defaults.

Reports the mode-weight TV, mean and sd over seeds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np

from benchmarks.multimodal import TARGETS, MixtureTarget, _four_modes, mode_weights
from pymc_dilation import sample_logdensity
from pymc_dilation.baselines import annealed_dilation, geometric_annealed_langevin, plain_langevin

STEPS_PER_LEVEL = 4

PAPER_TARGETS = {
    "mix2d": TARGETS["mix2d"],
    "mix2d_four": MixtureTarget(
        "mix2d_four", 2, _four_modes(2), np.array([0.1, 0.2, 0.3, 0.4]), 0.03
    ),
}


def _tv(samples: np.ndarray, target: MixtureTarget) -> float:
    dist = ((samples[:, None, :2] - target.centers[None, :, :2]) ** 2).sum(-1)
    found = np.bincount(dist.argmin(axis=1), minlength=len(target.weights)) / len(samples)
    return float(0.5 * np.abs(found - target.weights).sum())


def methods(budget: int) -> dict[str, Callable]:
    """Each method as ``f(logp_grad, n_particles, rng) -> (samples, gradients per particle)``."""
    n_levels = max(2, budget // (STEPS_PER_LEVEL + 1))

    def full(logp_grad, n, rng):
        result = sample_logdensity(logp_grad, 2, n, random_seed=int(rng.integers(2**31)))
        return result.samples, result.n_grad

    out = {
        "dilation (anneal only)": lambda f, n, rng: annealed_dilation(
            f, 2, n, n_levels, STEPS_PER_LEVEL, rng
        ),
    }
    for sd in (1.0, 10.0):
        out[f"geometric σ0={sd:g}"] = lambda f, n, rng, sd=sd: geometric_annealed_langevin(
            f, 2, n, n_levels, STEPS_PER_LEVEL, rng, reference_sd=sd
        )
        out[f"plain σ0={sd:g}"] = lambda f, n, rng, sd=sd: plain_langevin(
            f, 2, n, budget, rng, reference_sd=sd
        )
    out["sample_logdensity (defaults)"] = full
    return out


def run(budget: int, particles: int, seeds: int) -> list[dict]:
    """TV of every method on every paper target, over ``seeds`` seeds."""
    rows = []
    for name, target in PAPER_TARGETS.items():
        for method, sampler in methods(budget).items():
            tvs, grads = [], []
            for seed in range(seeds):
                samples, n_grad = sampler(target.logdensity, particles, np.random.default_rng(seed))
                tvs.append(_tv(samples, target))
                grads.append(n_grad)
            rows.append(
                {
                    "target": name,
                    "method": method,
                    "tv_mean": float(np.mean(tvs)),
                    "tv_sd": float(np.std(tvs)),
                    "gradients": int(np.median(grads)),
                }
            )
            print(
                f"{name:<11} {method:<30} TV {rows[-1]['tv_mean']:.3f} ± {rows[-1]['tv_sd']:.3f}"
                f"  gradients/particle {rows[-1]['gradients']}",
                flush=True,
            )
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| target | method | mode TV (mean ± sd) | gradients / particle |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['method']} | {r['tv_mean']:.3f} ± {r['tv_sd']:.3f} "
            f"| {r['gradients']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks paper ...``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks paper", description=__doc__)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    print(markdown(run(args.budget, args.particles, args.seeds)))
    return 0


__all__ = ["PAPER_TARGETS", "methods", "run", "markdown", "main", "mode_weights"]
