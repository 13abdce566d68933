"""Posteriors with symmetric copies of their modes: mode shares, label orders and evidence, both
samplers against PyMC's NUTS and ``pm.sample_smc``.

Usage (from the repository root)::

    python -m benchmarks symmetric [--targets squared-flat-1 mixture4-1 ...] [--chains 4]
        [--draws 1000] [--tune 1000] [--particles 2000] [--seed 1]
        [--samplers dilation population nuts smc] [--output benchmarks/results/symmetric]

Targets, generated from seeds (issue 23's classes):

- ``squared-flat-{seed}``: ``theta ~ Flat()``, ``y ~ Normal(theta**2, 0.5)``, 60 points about
  ``a**2`` with ``a`` in (1.5, 3) from the seed: two modes ``2a`` apart, about 0.015 wide,
  PyMC's start (``0.75 a``) beside one. Exact: share 0.5 and log Z by quadrature.
- ``squared-weak-{seed}``: the same under ``theta ~ Normal(m, 3)``, ``m`` in (-1, 1): the
  mirrored mode is not a copy (shares 0.4-0.6); exact share and log Z by quadrature.
- ``mixture{K}-{seed}`` (K = 4, 5): ``pm.NormalMixture`` with ``w ~ Dirichlet(1)``,
  ``mu ~ Normal(0, 10)``, ``sigma ~ HalfNormal(2)`` per component, 60 points around each of K
  centers drawn from the seed at least 3 apart: ``K!`` label orders of equal mass. Scored by
  each chain's order shares (largest deviation from ``1/K!``) and the sorted means against a
  long NUTS run with ordered means (cached in ``benchmarks/results/references``).
- ``factor-{seed}``: ``Y (8 x 40) ~ Normal(W F, sigma)``, ``W, F ~ Normal(0, 1)`` with two
  factors: column sign flips and the factors' order, 8 copies of each mode. Scored by the
  worst R-hat over ``W``, ``F`` and ``sigma``, and ``sigma``'s mean against the reference.

Each sampler is called twice with the same seed in one process (``cold``: the first call,
compilation included; ``warm``: the second) and timed whole. Writes ``OUTPUT.md`` and
``OUTPUT.json`` after every call.
"""

from __future__ import annotations

import json
import time
from functools import cache
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.mixtures import markdown_table, sampling_arguments

__all__ = ["DEFAULT_TARGETS", "build_model", "exact", "score", "main"]

DEFAULT_TARGETS = [
    f"{kind}-{seed}"
    for kind in ("squared-flat", "squared-weak", "mixture4", "mixture5", "factor")
    for seed in (1, 2)
]
SAMPLERS = ("dilation", "population", "nuts", "smc")
REFERENCES = Path(__file__).parent / "results" / "references"


def _parse(name: str) -> tuple[str, int]:
    kind, seed = name.rsplit("-", 1)
    return kind, int(seed)


def _squared(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.uniform(1.5, 3.0)
    m = rng.uniform(-1.0, 1.0)
    y = rng.normal(a**2, 0.5, 60)
    return a, (None if kind == "squared-flat" else m), y


def _mixture(k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    while True:
        centers = np.sort(rng.uniform(-3 * k, 3 * k, k))
        if np.min(np.diff(centers)) >= 3.0:
            break
    return np.concatenate([rng.normal(c, rng.uniform(0.5, 1.5), 60) for c in centers])


def _factor(seed: int) -> np.ndarray:
    rng = np.random.default_rng(200 + seed)
    return rng.normal(size=(8, 2)) @ rng.normal(size=(2, 40)) + 0.5 * rng.normal(size=(8, 40))


def build_model(name: str, ordered: bool = False):
    """The model of target ``name`` (``ordered``: the mixture's means ordered, for its
    reference)."""
    import pymc as pm

    kind, seed = _parse(name)
    with pm.Model() as model:
        if kind.startswith("squared"):
            a, m, y = _squared(kind, seed)
            if m is None:
                theta = pm.Flat("theta", initval=0.75 * a)
            else:
                theta = pm.Normal("theta", m, 3.0, initval=0.75 * a)
            pm.Normal("y", theta**2, 0.5, observed=y)
        elif kind.startswith("mixture"):
            k = int(kind.removeprefix("mixture"))
            kwargs = {}
            if ordered:
                kwargs = {
                    "transform": pm.distributions.transforms.ordered,
                    "initval": np.linspace(-5, 5, k),
                }
            mu = pm.Normal("mu", 0.0, 10.0, shape=k, **kwargs)
            sigma = pm.HalfNormal("sigma", 2.0, shape=k)
            w = pm.Dirichlet("w", np.ones(k))
            pm.NormalMixture("y", w=w, mu=mu, sigma=sigma, observed=_mixture(k, seed))
        elif kind == "factor":
            loadings = pm.Normal("W", 0.0, 1.0, shape=(8, 2))
            factors = pm.Normal("F", 0.0, 1.0, shape=(2, 40))
            sigma = pm.HalfNormal("sigma", 1.0)
            pm.Normal("Y", loadings @ factors, sigma, observed=_factor(seed))
        else:
            raise ValueError(f"Unknown target {name!r}.")
    return model


@cache
def exact(name: str) -> dict[str, Any]:
    """Quadrature (squared targets) or a cached long NUTS run (mixtures, factor model)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    kind, seed = _parse(name)
    if kind.startswith("squared"):
        a, m, y = _squared(kind, seed)
        grid = np.linspace(-2 * a, 2 * a, 400_001)
        ll = np.concatenate(
            [norm.logpdf(y[None], (g**2)[:, None], 0.5).sum(1) for g in np.array_split(grid, 40)]
        )
        if m is not None:
            ll += norm.logpdf(grid, m, 3.0)
        total = logsumexp(ll)
        return {
            "share": float(np.exp(logsumexp(ll[grid > 0]) - total)),
            "log_z": float(total + np.log(grid[1] - grid[0])),
        }
    path = REFERENCES / f"symmetric-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    import pymc as pm

    with build_model(name, ordered=kind.startswith("mixture")):
        idata = pm.sample(
            4000, tune=2000, chains=4, cores=1, random_seed=0, progressbar=False,
            compute_convergence_checks=False, target_accept=0.95,
        )  # fmt: skip
    post = idata.posterior
    if kind.startswith("mixture"):
        kept = _chains_in_the_main_mode(post, _mixture(int(kind.removeprefix("mixture")), seed))
        mu = np.asarray(post["mu"])[kept]
        mu = np.sort(mu.reshape(-1, mu.shape[-1]), axis=1)
        ref = {
            "sorted_mean": mu.mean(0).tolist(),
            "sorted_sd": mu.std(0).tolist(),
            "chains_kept": int(kept.sum()),
        }
    else:
        sigma = np.asarray(post["sigma"]).ravel()
        ref = {"sigma_mean": float(sigma.mean()), "sigma_sd": float(sigma.std())}
    REFERENCES.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref))
    return ref


LOG_LIKELIHOOD_GAP = 4.0
"""A reference chain whose mean log likelihood lies this many of the best chain's sds below the
best chain's is left out (see :func:`_chains_in_the_main_mode`)."""


def _chains_in_the_main_mode(post, y: np.ndarray) -> np.ndarray:
    """Which NUTS chains of a mixture's reference sampled its main mode.

    Even with ordered means a NUTS chain can stay in another configuration: on mixture4-9 one
    chain of four held a component of sd 4.75 spread over two clusters and another component
    placed between them, and the reference's lowest mean came out -6.86 with sd 3.1 where the
    other three chains (and both of this package's samplers) agree on -8.66 with sd 0.13.
    Such a chain's log likelihood is far below the others'. Chains that only visit another
    configuration now and then are kept (mixture4-2: the four chains' sds of the second mean
    0.19-3.2), so the sorted means' reference, and ``mean_err``, are only as good as NUTS's
    mixing between configurations; references cached before this rule are kept as they were.
    """
    from scipy.special import logsumexp
    from scipy.stats import norm

    mu, sigma, w = (np.asarray(post[v]) for v in ("mu", "sigma", "w"))
    log_lik = logsumexp(
        np.log(w)[..., None, :] + norm.logpdf(y[:, None], mu[..., None, :], sigma[..., None, :]),
        axis=-1,
    ).sum(-1)  # (chain, draw)
    means = log_lik.mean(1)
    best = int(np.argmax(means))
    return means >= means[best] - LOG_LIKELIHOOD_GAP * log_lik[best].std()


def score(name: str, idata) -> dict[str, Any]:
    """Errors of one run against :func:`exact`."""
    import arviz as az

    from pymc_dilation._compat import group_dataset

    kind, _ = _parse(name)
    post = group_dataset(idata, "posterior")
    ref = exact(name)
    row: dict[str, Any] = {}
    if kind.startswith("squared"):
        shares = (np.asarray(post["theta"]) > 0).mean(axis=1)
        row["share_exact"] = ref["share"]
        row["share_pooled"] = float(shares.mean())
        row["pooled_err"] = abs(row["share_pooled"] - ref["share"])
        row["worst_chain_err"] = float(np.max(np.abs(shares - ref["share"])))
    elif kind.startswith("mixture"):
        mu = np.asarray(post["mu"])
        k = mu.shape[-1]
        orders = np.argsort(np.argsort(mu, axis=-1), axis=-1)
        labels = list(permutations(range(k)))

        def deviation(block):
            flat = block.reshape(-1, k)
            counts = np.array([np.all(flat == p, axis=1).mean() for p in labels])
            return float(np.max(np.abs(counts - 1 / len(labels))))

        row["pooled_err"] = deviation(orders)
        row["worst_chain_err"] = max(deviation(chain) for chain in orders)
        sorted_mu = np.sort(mu.reshape(-1, k), axis=1).mean(0)
        row["mean_err"] = float(
            np.max(np.abs(sorted_mu - ref["sorted_mean"]) / np.array(ref["sorted_sd"]))
        )
    else:
        rhat = az.rhat(post[["W", "F", "sigma"]])
        row["max_rhat"] = float(max(float(rhat[v].max()) for v in ("W", "F", "sigma")))
        sigma = float(np.asarray(post["sigma"]).mean())
        row["mean_err"] = abs(sigma - ref["sigma_mean"]) / ref["sigma_sd"]
    stats = group_dataset(idata, "sample_stats")
    if "log_marginal_likelihood" in stats and "log_z" in ref:
        log_z = np.array([last_finite(c) for c in stats["log_marginal_likelihood"].values])
        log_z = log_z[np.isfinite(log_z)]
        row["log_z_err"] = float(np.max(np.abs(log_z - ref["log_z"])))
    return row


def last_finite(values) -> float:
    """A chain's evidence: its last finite value (``pm.sample_smc`` keeps one per stage, as
    lists of different lengths when the chains ran different numbers of stages)."""
    flat = np.hstack([np.ravel(np.asarray(v, dtype=float)) for v in np.ravel(values)])
    flat = flat[np.isfinite(flat)]
    return float(flat[-1]) if flat.size else np.nan


def _call(sampler: str, model, args):
    import pymc as pm

    from pymc_dilation import DilationLangevin, sample_dilation

    common = dict(random_seed=args.seed, progressbar=False)
    with model:
        if sampler == "dilation":
            return pm.sample(
                step=DilationLangevin(), draws=args.draws, tune=args.tune, chains=args.chains,
                cores=1, compute_convergence_checks=False, **common,
            )  # fmt: skip
        if sampler == "nuts":
            return pm.sample(
                draws=args.draws, tune=args.tune, chains=args.chains, cores=1,
                compute_convergence_checks=False, **common,
            )  # fmt: skip
        if sampler == "population":
            return sample_dilation(draws=args.particles, chains=args.chains, **common)
        if sampler == "smc":
            return pm.sample_smc(
                draws=args.particles, chains=args.chains, cores=1,
                compute_convergence_checks=False, **common,
            )  # fmt: skip
    raise ValueError(f"Unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}.")


_COLUMNS = [
    ("target", "{}"),
    ("sampler", "{}"),
    ("share_exact", "{:.3f}"),
    ("share_pooled", "{:.3f}"),
    ("pooled_err", "{:.3f}"),
    ("worst_chain_err", "{:.3f}"),
    ("max_rhat", "{:.3f}"),
    ("mean_err", "{:.3f}"),
    ("log_z_err", "{:.3f}"),
    ("cold_wall_s", "{:.1f}"),
    ("warm_wall_s", "{:.1f}"),
]


def main(argv: list[str] | None = None) -> int:
    parser = sampling_arguments(
        "python -m benchmarks symmetric", DEFAULT_TARGETS, SAMPLERS,
        "benchmarks/results/symmetric", __doc__,
    )  # fmt: skip
    args = parser.parse_args(argv)
    run_cold_and_warm(
        args, exact, build_model, score, _COLUMNS,
        # pm.sample_smc cannot draw a Flat prior
        skip=lambda target, sampler: sampler == "smc" and target.startswith("squared-flat"),
    )  # fmt: skip
    return 0


def run_cold_and_warm(args, exact, build_model, score, columns, skip=None) -> list[dict]:
    """Each target's reference (``exact``, untimed), then each sampler called twice with the
    same seed (cold, warm) and ``score``d; ``OUTPUT.md`` and ``OUTPUT.json`` written after
    every call. ``skip(target, sampler)`` leaves a pair out."""
    rows: list[dict[str, Any]] = []
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for target in args.targets:
        exact(target)  # the reference first, outside the timed calls
        model = build_model(target)
        for sampler in args.samplers:
            if skip is not None and skip(target, sampler):
                continue
            walls = []
            for _ in range(2):
                start = time.perf_counter()
                idata = _call(sampler, model, args)
                walls.append(time.perf_counter() - start)
            row = {"target": target, "sampler": sampler, **score(target, idata)}
            row["cold_wall_s"], row["warm_wall_s"] = walls
            rows.append(row)
            print(
                "  ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )
            output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
            output.with_suffix(".md").write_text(markdown_table(rows, columns) + "\n")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
