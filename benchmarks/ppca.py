"""Probabilistic PCA: the factor model of issue 24 (item 3), DilationLangevin against nutpie.

Usage (from the repository root)::

    python -m benchmarks ppca [--n 250] [--p 10] [--k 2] [--seeds 0] [--draws 500]
        [--tune 500] [--chains 4] [--cores 2]

``X (p x n) = W F + noise``, ``W ~ N(0, 1)`` (``p x k``), ``F ~ N(0, 1)`` (``k x n``), noise sd 1,
``sigma ~ HalfNormal(10)``: ``1 + k (p + n)`` parameters (521 by default). The posterior has
``k! 2^k`` copies of each mode (factors permuted, signs flipped), and a saddle at ``W F = 0``
where a sampler that misses the factors settles with ``sigma`` near the data's sd. Reported per
sampler and seed: wall time of the whole ``pm.sample`` call, ``sigma``'s mean per chain (the
truth is 1), the mean ``|W F|`` per chain (0 at the saddle), the largest R-hat of ``W`` (which
mixes across the copies only when a sampler moves between them) and of ``sigma``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np


def build_model(n: int, p: int, k: int, seed: int):
    import pymc as pm

    rng = np.random.default_rng(seed)
    data = rng.normal(size=(p, k)) @ rng.normal(size=(k, n)) + rng.normal(size=(p, n))
    with pm.Model() as model:
        loadings = pm.Normal("W", 0.0, 1.0, shape=(p, k))
        factors = pm.Normal("F", 0.0, 1.0, shape=(k, n))
        sigma = pm.HalfNormal("sigma", 10.0)
        pm.Normal("X", loadings @ factors, sigma, observed=data)
    return model


def run(sampler: str, model, args, seed: int) -> dict:
    import arviz as az
    import pymc as pm

    from pymc_dilation import DilationLangevin

    options = dict(
        draws=args.draws, tune=args.tune, chains=args.chains, cores=args.cores,
        random_seed=seed, progressbar=False, compute_convergence_checks=False,
    )  # fmt: skip
    start = time.perf_counter()
    with model:
        if sampler == "dilation":
            idata = pm.sample(step=DilationLangevin(), **options)
        else:
            idata = pm.sample(nuts_sampler="nutpie", **options)
    wall = time.perf_counter() - start
    posterior = idata.posterior
    products = np.einsum("cdpk,cdkn->cdpn", np.asarray(posterior["W"]), np.asarray(posterior["F"]))
    rhat = az.rhat(idata)
    return {
        "wall_s": round(wall, 1),
        "sigma_by_chain": np.asarray(posterior["sigma"]).mean(axis=1).round(3).tolist(),
        "abs_WF_by_chain": np.abs(products).mean(axis=(1, 2, 3)).round(3).tolist(),
        "max_rhat_W": round(float(rhat["W"].max()), 3),
        "rhat_sigma": round(float(rhat["sigma"]), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ppca")
    parser.add_argument("--n", type=int, default=250)
    parser.add_argument("--p", type=int, default=10)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    columns = ("seed", "sampler", "wall (s)", "sigma by chain", "mean abs(WF) by chain")
    print("| " + " | ".join((*columns, "max R-hat W", "R-hat sigma")) + " |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        model = build_model(args.n, args.p, args.k, seed)
        for sampler in ("dilation", "nutpie"):
            r = run(sampler, model, args, seed + 1)
            print(
                f"| {seed} | {sampler} | {r['wall_s']} | {r['sigma_by_chain']} | "
                f"{r['abs_WF_by_chain']} | {r['max_rhat_W']} | {r['rhat_sigma']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
