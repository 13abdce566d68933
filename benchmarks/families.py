"""Multimodal model families with known answers: the targets users actually write.

- ``sign_regression``: ``y ~ N(|b| x, s)``, ``b ~ N(0.3, 2)``, ``s ~ HalfNormal(1)``: two modes
  at ``b ≈ ±1.3``, unequal through the prior; reference ``P(b > 0)`` by quadrature on a
  ``(b, log s)`` grid.
- ``flat_bimodal``: ``x ~ Flat()`` times a two-component density ``0.5 N(4, 1) + 0.5 N(10, 1)``
  in a potential; the initial point (0) lies outside both modes, not between them.
  ``P(x > 7) = 0.5`` and ``Z = 1`` exactly; ``pm.sample_smc`` cannot draw a Flat prior.
- ``normal_mixture``: ``pm.NormalMixture`` with three components, unordered means
  (``N(0, 10)``), ``sigma ~ HalfNormal(2)``, ``w ~ Dirichlet(1, 1, 1)``, 300 points around
  −4, 0 and 5: six equal label-switching modes. Scored by the occupancy of the six orderings
  (reference 1/6 each) and the sorted means against a long NUTS run with ordered means.
- ``normal_mixture4``: the same with four components and 240 points around −6, −2, 2 and 6:
  24 equal label-switching modes, whose basins hold 1.8 % of the prior's draws together (the
  rest climb to optima that pile two components on one cluster).
"""

from __future__ import annotations

from functools import cache
from itertools import permutations

import numpy as np
import pymc as pm

__all__ = ["FAMILIES", "build_model", "score", "reference"]

FAMILIES = ("sign_regression", "flat_bimodal", "normal_mixture", "normal_mixture4")


def _sign_data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=40)
    y = 1.3 * x + rng.normal(0.0, 1.0, size=40)
    return x, y


def _mixture_data(components: int = 3):
    if components == 4:
        rng = np.random.default_rng(5)
        centers = np.repeat([-6.0, -2.0, 2.0, 6.0], 60)
    else:
        rng = np.random.default_rng(12)
        centers = np.repeat([-4.0, 0.0, 5.0], [90, 110, 100])
    return centers + rng.normal(size=len(centers))


def _components(name: str) -> int:
    return 4 if name == "normal_mixture4" else 3


def build_model(name: str, ordered: bool = False) -> pm.Model:
    """The PyMC model of family ``name`` (``ordered=True``: the mixture's identified form)."""
    with pm.Model() as model:
        if name == "sign_regression":
            x, y = _sign_data()
            b = pm.Normal("b", 0.3, 2.0)
            s = pm.HalfNormal("s", 1.0)
            pm.Normal("y", pm.math.abs(b) * x, s, observed=y)
        elif name == "flat_bimodal":
            x = pm.Flat("x")
            pm.Potential(
                "two_modes",
                pm.math.logsumexp(
                    pm.math.stack(
                        [
                            np.log(0.5) + pm.logp(pm.Normal.dist(4.0, 1.0), x),
                            np.log(0.5) + pm.logp(pm.Normal.dist(10.0, 1.0), x),
                        ]
                    )
                ),
            )
        elif name in ("normal_mixture", "normal_mixture4"):
            k = _components(name)
            kwargs = {}
            if ordered:
                kwargs = dict(
                    transform=pm.distributions.transforms.ordered, initval=np.linspace(-3, 3, k)
                )
            mu = pm.Normal("mu", 0.0, 10.0, shape=k, **kwargs)
            sigma = pm.HalfNormal("sigma", 2.0)
            w = pm.Dirichlet("w", np.ones(k))
            pm.NormalMixture("y", w=w, mu=mu, sigma=sigma, observed=_mixture_data(k))
        else:
            raise ValueError(f"Unknown family {name!r}; choose from {', '.join(FAMILIES)}.")
    return model


@cache
def reference(name: str) -> dict[str, object]:
    """The exact (quadrature) or long-run answer of a family."""
    if name == "sign_regression":
        x, y = _sign_data()
        b = np.linspace(-6, 6, 2401)[:, None]
        log_s = np.linspace(-3, 2, 801)[None, :]
        s = np.exp(log_s)
        sq = ((y[None, None, :] - np.abs(b)[..., None] * x) ** 2).sum(-1)
        logp = (
            -0.5 * ((b - 0.3) / 2.0) ** 2
            - 0.5 * s**2  # HalfNormal(1) on s
            + log_s  # the log transform's Jacobian
            - len(y) * log_s
            - 0.5 * sq / s**2
        )
        p = np.exp(logp - logp.max())
        return {"p_positive": float(p[b[:, 0] > 0].sum() / p.sum())}
    if name == "flat_bimodal":
        return {"p_right": 0.5, "log_evidence": 0.0}
    if name in ("normal_mixture", "normal_mixture4"):
        with build_model(name, ordered=True):
            idata = pm.sample(
                2000, tune=1000, chains=4, cores=1, random_seed=0, progressbar=False,
                compute_convergence_checks=False,
            )  # fmt: skip
        mu = np.asarray(idata.posterior["mu"]).reshape(-1, _components(name))
        return {"sorted_mean": mu.mean(axis=0), "sorted_sd": mu.std(axis=0)}
    raise ValueError(f"Unknown family {name!r}.")


def score(name: str, idata) -> dict[str, float]:
    """Mode-weight error (TV) and, for the mixture, the worst sorted-mean error in sds."""
    post = idata.posterior
    ref = reference(name)
    if name == "sign_regression":
        share = float((np.asarray(post["b"]) > 0).mean())
        return {"tv": abs(share - ref["p_positive"])}
    if name == "flat_bimodal":
        share = float((np.asarray(post["x"]) > 7.0).mean())
        return {"tv": abs(share - ref["p_right"])}
    k = _components(name)
    mu = np.asarray(post["mu"]).reshape(-1, k)
    orders = np.array([np.argsort(np.argsort(row)) for row in mu])
    labels = [tuple(p) for p in permutations(range(k))]
    counts = np.array([np.all(orders == p, axis=1).sum() for p in labels])
    tv = 0.5 * float(np.abs(counts / len(mu) - 1 / len(labels)).sum())
    err = np.abs(np.sort(mu, axis=1).mean(axis=0) - ref["sorted_mean"]) / ref["sorted_sd"]
    return {"tv": tv, "within_mean_err": float(err.max())}
