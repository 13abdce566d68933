"""Products of double wells: ``2^k`` modes, far more than particles (issue 23's combinatorial
class), both samplers against ``pm.sample_smc``.

Usage (from the repository root)::

    python -m benchmarks products [--targets wells8-1 wells16-2 ...] [--chains 4]
        [--draws 1000] [--tune 1000] [--particles 2000] [--seed 1]
        [--samplers dilation population smc] [--output benchmarks/results/products]

A target ``wells{k}-{seed}`` is ``x ~ Normal(0, 5)`` of shape ``k`` with the potential
``Σ_i [-h_i (u_i² - 1)² + t_i u_i]``, ``u_i = x_i / s_i``: k independent double wells with
barriers ``h_i`` of 2-4 nats, tilts ``t_i`` in (0.2, 0.6) (the right well holds 0.6-0.9 of
each factor's mass) and widths ``s_i`` in (0.5, 2), all drawn from ``(k, seed)``. The
posterior is the product of its k factors, so each factor's right-well share and ``log Z``
(the sum of the factors') are exact by one-dimensional quadrature. Scored by the largest
per-factor share error (pooled over chains, and the worst chain) and the error of
``log_marginal_likelihood`` where a sampler reports it (the largest over chains).

Each sampler is called twice with the same seed in one process (``cold``: the first call,
compilation included; ``warm``: the second) and timed whole. Writes ``OUTPUT.md`` and
``OUTPUT.json`` after every call.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import numpy as np

from benchmarks.mixtures import sampling_arguments
from benchmarks.symmetric import last_finite, run_cold_and_warm

__all__ = ["DEFAULT_TARGETS", "build_model", "exact", "score", "main"]

DEFAULT_TARGETS = [f"wells{k}-{seed}" for k in (8, 12, 16) for seed in (1, 2)]
SAMPLERS = ("dilation", "population", "smc")
PRIOR_SD = 5.0
_NAME = re.compile(r"wells(\d+)-(\d+)$")


def _parameters(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"Unknown target {name!r}; products are named wells{{k}}-{{seed}}.")
    k, seed = int(match.group(1)), int(match.group(2))
    rng = np.random.default_rng([k, seed, 7])
    return rng.uniform(2.0, 4.0, k), rng.uniform(0.2, 0.6, k), rng.uniform(0.5, 2.0, k)


def build_model(name: str):
    """The PyMC model of target ``name``."""
    import pymc as pm

    barrier, tilt, width = _parameters(name)
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, PRIOR_SD, shape=len(barrier))
        u = x / width
        pm.Potential("wells", (-barrier * (u**2 - 1.0) ** 2 + tilt * u).sum())
    return model


@cache
def exact(name: str) -> dict[str, Any]:
    """Each factor's right-well share and the model's ``log Z``, by quadrature."""
    from scipy.integrate import quad
    from scipy.stats import norm

    barrier, tilt, width = _parameters(name)
    shares, log_z = [], 0.0
    for h, t, s in zip(barrier, tilt, width, strict=True):

        def density(x, h=h, t=t, s=s):
            u = x / s
            return np.exp(-h * (u * u - 1.0) ** 2 + t * u) * norm.pdf(x, 0.0, PRIOR_SD)

        left = quad(density, -np.inf, 0.0)[0]
        right = quad(density, 0.0, np.inf)[0]
        shares.append(right / (left + right))
        log_z += np.log(left + right)
    return {"shares": np.array(shares), "log_z": float(log_z)}


def score(name: str, idata) -> dict[str, Any]:
    """Per-factor share errors (pooled and worst chain) and the log Z error."""
    from pymc_dilation._compat import group_dataset

    ref = exact(name)
    draws = np.asarray(group_dataset(idata, "posterior")["x"])  # (chain, draw, k)
    per_chain = np.mean(draws > 0.0, axis=1)
    pooled = per_chain.mean(axis=0)
    row = {
        "factors": len(ref["shares"]),
        "pooled_err": float(np.max(np.abs(pooled - ref["shares"]))),
        "worst_chain_err": float(np.max(np.abs(per_chain - ref["shares"]))),
    }
    stats = group_dataset(idata, "sample_stats")
    if "log_marginal_likelihood" in stats:
        log_z = np.array([last_finite(chain) for chain in stats["log_marginal_likelihood"].values])
        log_z = log_z[np.isfinite(log_z)]
        if log_z.size:
            row["log_z_err"] = float(np.max(np.abs(log_z - ref["log_z"])))
    return row


_COLUMNS = [
    ("target", "{}"),
    ("sampler", "{}"),
    ("factors", "{}"),
    ("pooled_err", "{:.3f}"),
    ("worst_chain_err", "{:.3f}"),
    ("log_z_err", "{:.2f}"),
    ("cold_wall_s", "{:.1f}"),
    ("warm_wall_s", "{:.1f}"),
]


def main(argv: list[str] | None = None) -> int:
    parser = sampling_arguments(
        "python -m benchmarks products", DEFAULT_TARGETS, SAMPLERS,
        "benchmarks/results/products", __doc__,
    )  # fmt: skip
    args = parser.parse_args(argv)
    run_cold_and_warm(args, exact, build_model, score, _COLUMNS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
