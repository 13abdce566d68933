"""How often a ``DilationLangevin`` chain's tuning population maps too few modes.

Usage (from the repository root)::

    python -m benchmarks mode-misses [--targets gauss_mixture-d150-3 rand10d-5 ...]
        [--seeds 1 2 3] [--chains 4] [--output benchmarks/results/mode_misses]

A chain's map is made in its first iteration (the tuning population), so a short run shows it
(20 tuning iterations, 5 draws):

- :mod:`benchmarks.dimension`'s ``gauss_mixture-d{D}-{seed}`` (two modes):
  ``pm.sample(step=DilationLangevin(), chains=C, cores=1, random_seed=seed)`` for each seed,
  and each chain's ``n_modes`` after it; a chain with fewer than two is a miss.
- :mod:`benchmarks.randomized`'s ``rand{d}d-{seed}`` (4-50 modes of different widths): one
  chain per ``pm.sample`` call (``random_seed = 1000 seed + chain``, so that the step's own
  ``mode_map`` is that chain's), its map's optima classified by the exact posterior's
  components; a chain whose map lacks components holding at least :data:`MISSED_MASS` of the
  posterior is a miss, and the mean missing mass is reported.

A chain with a miss samples too little of those modes (the cross-chain check warns only when
its siblings differ). Misses are rare events, so they are counted over many seeds; the full
runs of ``python -m benchmarks mixtures`` and ``chain-seeds`` give the shares.

Writes ``OUTPUT.md`` and ``OUTPUT.json`` after every target.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_TARGETS", "count_misses", "main"]

DEFAULT_TARGETS = [
    "gauss_mixture-d150-3", "gauss_mixture-d200-8", "gauss_mixture-d100-7", "rand10d-5",
]  # fmt: skip
MISSED_MASS = 0.05
"""A ``rand{d}d`` chain whose map lacks components of at least this much posterior mass
misses (the cross-chain check's ``MODE_SHARE``)."""


def _seed_range(seeds: list[int]) -> str:
    return f"{min(seeds)}-{max(seeds)}" if len(seeds) > 1 else str(seeds[0])


def count_misses(target: str, seeds: list[int], chains: int) -> dict[str, Any]:
    """Chains whose map misses modes of ``target``, over ``seeds``."""
    from benchmarks import randomized

    if randomized.is_randomized(target):
        return _count_randomized(target, seeds, chains)
    return _count_two_modes(target, seeds, chains)


def _count_randomized(target: str, seeds: list[int], chains: int) -> dict[str, Any]:
    import pymc as pm

    from benchmarks import randomized
    from pymc_dilation import DilationLangevin

    mixture = randomized.target(target)
    weights = mixture.posterior_weights
    missing: list[float] = []
    start = time.perf_counter()
    for seed in seeds:
        for chain in range(chains):
            with randomized.build_model(target), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                step = DilationLangevin()
                pm.sample(
                    draws=5, tune=20, chains=1, cores=1, random_seed=1000 * seed + chain,
                    progressbar=False, compute_convergence_checks=False, step=step,
                )  # fmt: skip
            found = np.unique(mixture.classify(step.mode_map.locations))
            missing.append(float(weights.sum() - weights[found].sum()))
    return {
        "target": target,
        "seeds": _seed_range(seeds),
        "chains": len(missing),
        "missed": int(np.sum(np.asarray(missing) >= MISSED_MASS)),
        "mean_missing_mass": float(np.mean(missing)),
        "wall_s": time.perf_counter() - start,
    }


def _count_two_modes(target: str, seeds: list[int], chains: int) -> dict[str, Any]:
    import pymc as pm

    from benchmarks import dimension
    from pymc_dilation import DilationLangevin

    expected = 2
    modes: list[list[int]] = []
    start = time.perf_counter()
    for seed in seeds:
        with dimension.build_model(target), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = pm.sample(
                draws=5, tune=20, chains=chains, cores=1, random_seed=seed, progressbar=False,
                compute_convergence_checks=False, step=DilationLangevin(),
            )  # fmt: skip
        modes.append([int(n) for n in np.asarray(idata.sample_stats["n_modes"])[:, -1]])
    missed = sum(int(np.sum(np.asarray(m) < expected)) for m in modes)
    return {
        "target": target,
        "seeds": _seed_range(seeds),
        "chains": chains * len(seeds),
        "missed": missed,
        "modes_per_chain": modes,
        "wall_s": time.perf_counter() - start,
    }


_COLUMNS = [
    ("target", "{}"), ("seeds", "{}"), ("chains", "{}"), ("missed", "{}"),
    ("mean_missing_mass", "{:.3f}"), ("wall_s", "{:.0f}"),
]  # fmt: skip


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (``missed``: chains whose map lacked a mode)."""
    from benchmarks.mixtures import markdown_table as table

    return table(rows, _COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks mode-misses", description=__doc__)
    parser.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(1, 16)))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--output", default="benchmarks/results/mode_misses")
    args = parser.parse_args(argv)
    import pymc  # noqa: F401  (its import sets its logger's level: quiet it after)

    logging.getLogger("pymc").setLevel(logging.ERROR)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for target in args.targets:
        row = count_misses(target, args.seeds, args.chains)
        rows.append(row)
        print(f"{target:<24} {row['missed']} of {row['chains']} chains missed a mode", flush=True)
        output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        output.with_suffix(".md").write_text(markdown_table(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
