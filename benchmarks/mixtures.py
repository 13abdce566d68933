"""Two-mode Gaussian mixtures in 20 to 200 dimensions: mode shares and evidence, both samplers
against ``pm.sample_smc``.

Usage (from the repository root)::

    python -m benchmarks mixtures [--targets gauss_mixture-d20-1 ...] [--chains 4]
        [--draws 1000] [--tune 1000] [--particles 2000] [--seed 1]
        [--samplers dilation population smc] [--output benchmarks/results/mixtures]

Targets are :mod:`benchmarks.dimension`'s ``gauss_mixture-d{D}-{seed}`` (exact shares, moments
and log evidence). For each target, in one process, each sampler is called twice with the same
seed (``cold``: the first call, compilation included; ``warm``: the second) and timed whole:

- ``dilation``: ``pm.sample(step=DilationLangevin(), chains=C, cores=1)``; every chain's share
  of the first component, the pooled share, and the modes in each chain's map;
- ``population``: ``sample_dilation(draws=particles)``: share, log Z;
- ``smc``: ``pm.sample_smc(draws=particles, chains=1)``: share, log Z.

Reported per call: wall time, the worst chain's share error, the pooled share error, the log Z
error, and the worst standardised mean and relative sd error against the exact moments.
Writes ``OUTPUT.md`` and ``OUTPUT.json`` after every target.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_TARGETS", "measure", "main"]

DEFAULT_TARGETS = [f"gauss_mixture-d{d}-{seed}" for d in (20, 100, 200) for seed in (1, 2)]
SAMPLERS = ("dilation", "population", "smc")


def _call(sampler: str, model, args) -> Any:
    import pymc as pm

    from pymc_dilation import DilationLangevin, sample_dilation

    with model:
        if sampler == "dilation":
            return pm.sample(
                step=DilationLangevin(), draws=args.draws, tune=args.tune, chains=args.chains,
                cores=1, random_seed=args.seed, progressbar=False,
                compute_convergence_checks=False,
            )  # fmt: skip
        if sampler == "population":
            return sample_dilation(draws=args.particles, random_seed=args.seed, progressbar=False)
        if sampler == "smc":
            return pm.sample_smc(
                draws=args.particles, chains=1, random_seed=args.seed, progressbar=False,
                compute_convergence_checks=False,
            )  # fmt: skip
    raise ValueError(f"Unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}.")


def measure(target: str, sampler: str, model, args) -> dict[str, Any]:
    """One timed call of ``sampler`` on ``target`` and its errors against the exact values."""
    from benchmarks import dimension
    from pymc_dilation._compat import group_dataset

    start = time.perf_counter()
    idata = _call(sampler, model, args)
    wall = time.perf_counter() - start
    exact = dimension.gauss_mixture(target).posterior()[0][0]
    draws = np.asarray(group_dataset(idata, "posterior")["x"])
    chains = [dimension.mixture_shares(chain, target)[0] for chain in draws]
    row: dict[str, Any] = {
        "wall_s": wall,
        "share_exact": float(exact),
        "share_pooled": float(dimension.mixture_shares(draws, target)[0]),
        "worst_chain_share_err": float(max(abs(s - exact) for s in chains)),
        **dimension.moment_errors(idata, target),
    }
    row["pooled_share_err"] = abs(row["share_pooled"] - exact)
    stats = group_dataset(idata, "sample_stats")
    if "log_marginal_likelihood" in stats:
        log_z = np.asarray(stats["log_marginal_likelihood"], dtype=float).ravel()
        log_z = log_z[np.isfinite(log_z)]
        row["log_z_err"] = float(abs(np.mean(log_z) - dimension.log_evidence(target)))
    if "n_modes" in stats:
        row["modes_per_chain"] = np.asarray(stats["n_modes"])[:, -1].astype(int).tolist()
    return row


_COLUMNS = [
    ("target", "{}"),
    ("sampler", "{}"),
    ("share_exact", "{:.3f}"),
    ("share_pooled", "{:.3f}"),
    ("worst_chain_share_err", "{:.3f}"),
    ("log_z_err", "{:.3f}"),
    ("mean_err", "{:.3f}"),
    ("sd_err", "{:.3f}"),
    ("modes_per_chain", "{}"),
    ("cold_wall_s", "{:.1f}"),
    ("warm_wall_s", "{:.1f}"),
]


def markdown_table(rows: list[dict[str, Any]], columns=None) -> str:
    """The rows as a Markdown table (the warm call's errors; both calls' walls); ``columns``
    is a list of ``(key, format)`` (default: this benchmark's)."""
    columns = _COLUMNS if columns is None else columns
    lines = [
        "| " + " | ".join(key for key, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key, fmt in columns:
            value = row.get(key)
            cells.append("" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sampling_arguments(prog: str, targets, samplers, output: str, description=None):
    """The command line shared by the benchmarks that call each sampler cold and warm."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--targets", nargs="+", default=list(targets))
    parser.add_argument("--samplers", nargs="+", default=list(samplers), choices=samplers)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default=output)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = sampling_arguments(
        "python -m benchmarks mixtures", DEFAULT_TARGETS, SAMPLERS,
        "benchmarks/results/mixtures", __doc__,
    )  # fmt: skip
    args = parser.parse_args(argv)

    from benchmarks import dimension

    rows: list[dict[str, Any]] = []
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for target in args.targets:
        model = dimension.build_model(target)
        for sampler in args.samplers:
            row: dict[str, Any] = {"target": target, "sampler": sampler}
            cold = measure(target, sampler, model, args)
            warm = measure(target, sampler, model, args)
            row.update({k: v for k, v in warm.items() if k != "wall_s"})
            row["cold_wall_s"], row["warm_wall_s"] = cold["wall_s"], warm["wall_s"]
            row["cold_worst_chain_share_err"] = cold["worst_chain_share_err"]
            rows.append(row)
            print(
                f"{target:<24} {sampler:<10} share {row['share_pooled']:.3f} "
                f"(exact {row['share_exact']:.3f}, worst chain err "
                f"{row['worst_chain_share_err']:.3f}) log Z err {row.get('log_z_err', np.nan):.3f} "
                f"wall {row['cold_wall_s']:.1f}/{row['warm_wall_s']:.1f} s",
                flush=True,
            )
            output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
            output.with_suffix(".md").write_text(markdown_table(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
