"""Held-out correlated linear regressions generated from seeds, with exact posterior moments.

A target is named ``corr_regression-{seed}``; its seed draws everything:

- ``d`` coefficients, 5–10, the first an intercept (a column of ones);
- the other ``d − 1`` predictors: AR(1)-correlated normals (neighbour correlation 0.85–0.99),
  each shifted by ``N(0, 2²)`` (so the intercept is correlated with them too) and scaled by
  ``exp(N(0, 1))``; ``n = 100`` rows;
- true coefficients ``N(0, 2²)``, noise sd uniform on ``[0.5, 2]``;
- the prior on the coefficients: ``pm.Flat`` for odd seeds, ``N(0, 10²)`` for even ones;
  ``sigma ~ HalfNormal(5)`` always.

The model is ``y ~ N(X beta, sigma)``. Given ``sigma`` the coefficients are Gaussian, so the
exact posterior moments of ``beta`` and ``sigma`` come from quadrature over ``log sigma``
(:func:`reference_moments`): no reference run is needed, and a sampler is judged by the
worst standardised error of the posterior means and the relative error of the sds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import pymc as pm
import pytensor.tensor as pt

__all__ = [
    "SUITE",
    "Regression",
    "is_regression",
    "regression",
    "build_model",
    "moment_errors",
    "worst_moment_errors",
]

SUITE = [f"corr_regression-{seed}" for seed in (1, 2, 3, 4)]
"""The held-out regressions the end-to-end benchmark runs by default."""

PRIOR_SD = 10.0
SIGMA_PRIOR_SD = 5.0
N_ROWS = 100
_NAME = re.compile(r"corr_regression-(\d+)$")


def is_regression(name: str) -> bool:
    """Whether ``name`` names a target of this suite."""
    return _NAME.match(name) is not None


@dataclass(frozen=True)
class Regression:
    """A generated regression: design, response, prior and the truth it was drawn from."""

    name: str
    x: np.ndarray  # (n, d), first column ones
    y: np.ndarray  # (n,)
    flat_prior: bool
    beta_true: np.ndarray
    sigma_true: float
    rho: float

    @property
    def dim(self) -> int:
        """Number of coefficients."""
        return self.x.shape[1]


@cache
def regression(name: str) -> Regression:
    """The regression named ``name`` (``corr_regression-{seed}``)."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"Not a regression target: {name!r} (expected corr_regression-SEED).")
    seed = int(match.group(1))
    rng = np.random.default_rng(10_000 + seed)
    d = int(rng.integers(5, 11))
    rho = float(rng.uniform(0.85, 0.99))
    lags = np.abs(np.subtract.outer(np.arange(d - 1), np.arange(d - 1)))
    chol = np.linalg.cholesky(rho**lags)
    z = rng.standard_normal((N_ROWS, d - 1)) @ chol.T
    predictors = (z + rng.normal(0.0, 2.0, d - 1)) * np.exp(rng.normal(0.0, 1.0, d - 1))
    x = np.column_stack([np.ones(N_ROWS), predictors])
    beta = rng.normal(0.0, 2.0, d)
    sigma = float(rng.uniform(0.5, 2.0))
    y = x @ beta + rng.normal(0.0, sigma, N_ROWS)
    return Regression(name, x, y, seed % 2 == 1, beta, sigma, rho)


def build_model(name: str) -> pm.Model:
    """The PyMC model of regression ``name``: coefficients ``beta``, noise sd ``sigma``."""
    reg = regression(name)
    with pm.Model() as model:
        if reg.flat_prior:
            beta = pm.Flat("beta", shape=reg.dim)
        else:
            beta = pm.Normal("beta", 0.0, PRIOR_SD, shape=reg.dim)
        sigma = pm.HalfNormal("sigma", SIGMA_PRIOR_SD)
        pm.Normal("y", pt.dot(reg.x, beta), sigma, observed=reg.y)
    return model


@cache
def reference_moments(name: str) -> dict[str, tuple[float, float]]:
    """Exact posterior mean and sd of every ``beta[i]`` (0-based) and of ``sigma``.

    Given ``sigma``, ``beta`` is Gaussian with precision ``X'X / sigma² + I / tau²`` (no second
    term for the Flat prior); ``sigma``'s marginal posterior is evaluated on a grid of 4001
    points in ``log sigma`` (Jacobian included) and the conditional moments are averaged over
    it (law of total variance).
    """
    reg = regression(name)
    x, y = reg.x, reg.y
    n, d = x.shape
    xtx, xty = x.T @ x, x.T @ y
    beta_hat = np.linalg.solve(xtx, xty)
    rss = float(np.sum((y - x @ beta_hat) ** 2))
    scale = np.sqrt(rss / (n - d))
    log_sigma = np.linspace(np.log(scale) - 3.0, np.log(scale) + 3.0, 4001)
    sigma = np.exp(log_sigma)
    log_w = np.empty_like(sigma)
    means = np.empty((sigma.size, d))
    variances = np.empty((sigma.size, d))
    for i, s in enumerate(sigma):  # reference computation, not a sampler's hot path
        if reg.flat_prior:
            cov = np.linalg.inv(xtx) * s**2
            means[i] = beta_hat
            log_lik = -(n - d) * np.log(s) - 0.5 * rss / s**2
        else:
            precision = xtx / s**2 + np.eye(d) / PRIOR_SD**2
            cov = np.linalg.inv(precision)
            means[i] = cov @ xty / s**2
            marginal = s**2 * np.eye(n) + PRIOR_SD**2 * (x @ x.T)
            _, log_det = np.linalg.slogdet(marginal)
            log_lik = -0.5 * log_det - 0.5 * y @ np.linalg.solve(marginal, y)
        variances[i] = np.diag(cov)
        log_w[i] = log_lik - 0.5 * (s / SIGMA_PRIOR_SD) ** 2 + np.log(s)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    beta_mean = w @ means
    beta_var = w @ (variances + means**2) - beta_mean**2
    sigma_mean = float(w @ sigma)
    sigma_sd = float(np.sqrt(w @ sigma**2 - sigma_mean**2))
    out = {f"beta[{i}]": (float(beta_mean[i]), float(np.sqrt(beta_var[i]))) for i in range(d)}
    out["sigma"] = (sigma_mean, sigma_sd)
    return out


def moment_errors(idata, name: str) -> dict[str, float]:
    """Worst ``|mean − exact| / exact sd`` and worst ``|sd / exact sd − 1|`` over all parameters."""
    post = idata.posterior
    beta = np.asarray(post["beta"]).reshape(-1, regression(name).dim)
    sigma = np.asarray(post["sigma"]).reshape(-1)
    estimates = {f"beta[{i}]": beta[:, i] for i in range(beta.shape[1])} | {"sigma": sigma}
    return worst_moment_errors(estimates, reference_moments(name))


def worst_moment_errors(
    estimates: dict[str, np.ndarray], reference: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Worst standardised mean error and relative sd error of ``estimates`` (draws by name)
    against ``reference`` (``(mean, sd)`` by name)."""
    mean_err, sd_err = 0.0, 0.0
    for key, (mean, sd) in reference.items():
        draws = estimates[key]
        mean_err = max(mean_err, abs(float(draws.mean()) - mean) / sd)
        sd_err = max(sd_err, abs(float(draws.std(ddof=1)) / sd - 1.0))
    return {"mean_err": mean_err, "sd_err": sd_err}
