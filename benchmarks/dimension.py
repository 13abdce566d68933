"""The dimension suite: posteriors of 10 to 1000 parameters generated from seeds.

Targets (any seed and size is accepted, so held-out ones need no code change):

- ``gauss_regression-d{D}-{seed}``: a Gaussian linear regression with ``D`` coefficients,
  ``n = 2 D + 50`` rows, AR(1)-correlated predictors (neighbour correlation 0.5–0.95 from the
  seed) scaled by ``exp(N(0, 1))``, known noise sd 1 and a ``N(0, 5²)`` prior. The posterior is
  Gaussian, so its moments and log evidence are exact (:func:`reference_moments`,
  :func:`log_evidence`).
- ``hierarchical-g{G}-{seed}``: varying intercepts and slopes, non-centered, ``G`` groups of
  3–15 rows each, ``2 G + 5`` parameters (``mu_a, mu_b, tau_a, tau_b, sigma`` and the
  standardised effects). No closed form: the reference is a long nutpie run (4 chains × 2000
  draws after 1000 tuning, seed 12345), computed once and cached in
  ``benchmarks/results/references/``.

- ``gauss_mixture-d{D}-{seed}``: a two-component Gaussian mixture in ``D`` dimensions (a
  ``N(0, 10²)`` prior on every coordinate times a mixture likelihood), weights 0.2–0.4 against
  the rest, AR(1)-correlated covariances along different orders of the coordinates with their
  own scales (different covariances of similar volume), means 10 standard deviations apart along
  the widest direction. Each component times the prior
  is Gaussian, so the moments, the two modes' shares (:func:`mixture_shares`) and the log
  evidence are exact. Not in :data:`SUITE` (ESS against NUTS means nothing where NUTS cannot
  cross between modes): ``python -m benchmarks mixtures`` measures them.
- ``radon``: the PyMC gallery's radon model with varying intercepts and slopes by county,
  non-centered (175 parameters), on ``../shared/data/radon.csv``; reference a long nutpie run.
- ``stochvol-{n}``: the gallery's stochastic-volatility model (a Gaussian random walk of log
  volatility, Student-t returns) on the first ``n`` daily returns of ``../shared/data/sp500.csv``
  (``n + 2`` parameters); reference a long nutpie run.

``python -m benchmarks end-to-end --targets dimension`` runs the default suite through the
end-to-end benchmark (cold and warm, against PyMC's NUTS and nutpie).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

__all__ = [
    "SUITE",
    "is_target",
    "build_model",
    "reference_moments",
    "log_evidence",
    "moment_errors",
    "mixture_shares",
]

SUITE = [
    *(f"gauss_regression-d{d}-{seed}" for d in (10, 50, 200, 1000) for seed in (1, 2)),
    *(f"hierarchical-g{g}-{seed}" for g in (20, 100) for seed in (1, 2)),
    "radon",
    "stochvol-250",
]
"""The default dimension suite of the end-to-end benchmark."""

PRIOR_SD = 5.0
_REGRESSION = re.compile(r"gauss_regression-d(\d+)-(\d+)$")
_HIERARCHICAL = re.compile(r"hierarchical-g(\d+)-(\d+)$")
_STOCHVOL = re.compile(r"stochvol-(\d+)$")
_MIXTURE = re.compile(r"gauss_mixture-d(\d+)-(\d+)$")
MIXTURE_PRIOR_SD = 10.0
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCES = Path(__file__).parent / "results" / "references"


def is_target(name: str) -> bool:
    """Whether ``name`` names a target of this suite."""
    return bool(
        _REGRESSION.match(name)
        or _HIERARCHICAL.match(name)
        or _STOCHVOL.match(name)
        or _MIXTURE.match(name)
        or name == "radon"
    )


@dataclass(frozen=True)
class GaussRegression:
    x: np.ndarray
    y: np.ndarray

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact posterior mean and covariance of the coefficients."""
        precision = self.x.T @ self.x + np.eye(self.dim) / PRIOR_SD**2
        covariance = np.linalg.inv(precision)
        return covariance @ (self.x.T @ self.y), covariance


@cache
def gauss_regression(name: str) -> GaussRegression:
    match = _REGRESSION.match(name)
    if match is None:
        raise ValueError(f"Not a regression of the dimension suite: {name!r}.")
    dim, seed = int(match.group(1)), int(match.group(2))
    rng = np.random.default_rng([dim, seed, 21])
    rho = rng.uniform(0.5, 0.95)
    n = 2 * dim + 50
    innovations = rng.standard_normal((n, dim))
    z = np.empty((n, dim))
    z[:, 0] = innovations[:, 0]
    for j in range(1, dim):  # AR(1) across predictors: data generation, not a sampler
        z[:, j] = rho * z[:, j - 1] + np.sqrt(1.0 - rho**2) * innovations[:, j]
    x = z * np.exp(rng.normal(0.0, 1.0, dim))
    beta = rng.normal(0.0, 1.0, dim)
    y = x @ beta + rng.standard_normal(n)
    return GaussRegression(x, y)


def _ar1_covariance(rng, dim: int, rho: float, scale: float) -> np.ndarray:
    lags = np.abs(np.subtract.outer(np.arange(dim), np.arange(dim)))
    sds = scale * np.exp(rng.normal(0.0, 0.3, dim))
    return rho**lags * np.outer(sds, sds)


def _log_normal_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Log density of ``N(mean, cov)`` at the rows of ``x``."""
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (np.atleast_2d(x) - mean).T)
    log_det = 2.0 * np.log(np.diag(chol)).sum()
    return -0.5 * (np.sum(z**2, axis=0) + log_det + len(mean) * np.log(2 * np.pi))


@dataclass(frozen=True)
class GaussMixture:
    """Likelihood components ``(weights, means, covs)`` and the exact posterior's components."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def posterior(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Posterior component weights, means, covariances and the log evidence."""
        prior_cov = MIXTURE_PRIOR_SD**2 * np.eye(self.dim)
        log_terms, means, covs = [], [], []
        for w, m, c in zip(self.weights, self.means, self.covs, strict=True):
            cov = np.linalg.inv(np.linalg.inv(c) + np.linalg.inv(prior_cov))
            means.append(cov @ np.linalg.solve(c, m))
            covs.append(cov)
            log_terms.append(
                np.log(w) + _log_normal_density(m, np.zeros(self.dim), c + prior_cov)[0]
            )
        log_terms = np.array(log_terms)
        log_z = float(np.logaddexp.reduce(log_terms))
        return np.exp(log_terms - log_z), np.array(means), np.array(covs), log_z


@cache
def gauss_mixture(name: str) -> GaussMixture:
    match = _MIXTURE.match(name)
    if match is None:
        raise ValueError(f"Not a mixture of the dimension suite: {name!r}.")
    dim, seed = int(match.group(1)), int(match.group(2))
    rng = np.random.default_rng([dim, seed, 23])
    weight = rng.uniform(0.2, 0.4)
    # Correlated along different orders of the coordinates, with their own scales: different
    # covariances of similar volume (a width ratio r in every direction multiplies a
    # component's basin volume by r^D; see RESULTS.md for that case).
    rho = rng.uniform(0.3, 0.9)
    order = rng.permutation(dim)
    covs = np.array(
        [
            _ar1_covariance(rng, dim, rho, 1.0),
            _ar1_covariance(rng, dim, rho, 1.0)[np.ix_(order, order)],
        ]
    )
    # 10 sds apart along the widest direction of either component: no chain crosses by diffusion.
    widest = max(np.linalg.eigvalsh(c)[-1] for c in covs)
    direction = rng.standard_normal(dim)
    offset = 10.0 * np.sqrt(widest) * direction / np.linalg.norm(direction)
    center = rng.normal(0.0, 1.0, dim)
    means = np.array([center - 0.5 * offset, center + 0.5 * offset])
    return GaussMixture(np.array([weight, 1.0 - weight]), means, covs)


def mixture_shares(draws: np.ndarray, name: str) -> np.ndarray:
    """The share of ``draws`` (``(..., D)``) in each exact posterior component, by the larger
    responsibility."""
    weights, means, covs, _ = gauss_mixture(name).posterior()
    flat = draws.reshape(-1, draws.shape[-1])
    log_resp = np.stack(
        [np.log(w) + _log_normal_density(flat, m, c) for w, m, c in zip(weights, means, covs)]
    )
    labels = np.argmax(log_resp, axis=0)
    return np.bincount(labels, minlength=len(weights)) / labels.size


@dataclass(frozen=True)
class Hierarchical:
    group: np.ndarray
    x: np.ndarray
    y: np.ndarray
    n_groups: int


@cache
def hierarchical(name: str) -> Hierarchical:
    match = _HIERARCHICAL.match(name)
    if match is None:
        raise ValueError(f"Not a hierarchical model of the dimension suite: {name!r}.")
    groups, seed = int(match.group(1)), int(match.group(2))
    rng = np.random.default_rng([groups, seed, 22])
    sizes = rng.integers(3, 16, groups)
    group = np.repeat(np.arange(groups), sizes)
    x = rng.normal(0.0, 1.0, group.size)
    a = rng.normal(1.0, 0.5, groups)
    b = rng.normal(-0.5, 0.3, groups)
    y = a[group] + b[group] * x + rng.normal(0.0, 0.8, group.size)
    return Hierarchical(group, x, y, groups)


def build_model(name: str):
    """The ``pm.Model`` of target ``name``."""
    import pymc as pm
    import pytensor.tensor as pt

    if _REGRESSION.match(name):
        reg = gauss_regression(name)
        with pm.Model() as model:
            beta = pm.Normal("beta", 0.0, PRIOR_SD, shape=reg.dim)
            pm.Normal("y", pt.dot(reg.x, beta), 1.0, observed=reg.y)
        return model
    if _MIXTURE.match(name):
        mix = gauss_mixture(name)
        with pm.Model() as model:
            x = pm.Normal("x", 0.0, MIXTURE_PRIOR_SD, shape=mix.dim)
            terms = [
                np.log(w) + pm.logp(pm.MvNormal.dist(m, c), x)
                for w, m, c in zip(mix.weights, mix.means, mix.covs, strict=True)
            ]
            pm.Potential("mixture", pm.math.logsumexp(pt.stack(terms)))
        return model
    if name == "radon":
        return _radon_model()
    if _STOCHVOL.match(name):
        return _stochvol_model(int(_STOCHVOL.match(name).group(1)))
    data = hierarchical(name)
    with pm.Model(coords={"group": np.arange(data.n_groups)}) as model:
        mu_a = pm.Normal("mu_a", 0.0, 2.0)
        mu_b = pm.Normal("mu_b", 0.0, 2.0)
        tau_a = pm.HalfNormal("tau_a", 1.0)
        tau_b = pm.HalfNormal("tau_b", 1.0)
        z_a = pm.Normal("z_a", 0.0, 1.0, dims="group")
        z_b = pm.Normal("z_b", 0.0, 1.0, dims="group")
        sigma = pm.HalfNormal("sigma", 1.0)
        a = mu_a + tau_a * z_a
        b = mu_b + tau_b * z_b
        mean = a[data.group] + b[data.group] * data.x
        pm.Normal("y", mean, sigma, observed=data.y)
    return model


def radon_data():
    """The gallery's radon data, ``(log_radon, coords)``, and a function that declares its
    ``floor_idx`` and ``county_idx`` data (call it inside the model)."""
    import pandas as pd
    import pymc as pm

    data = pd.read_csv(DATA / "radon.csv")
    county, counties = pd.factorize(data["county"])
    coords = {"county": counties, "obs_id": np.arange(len(data))}

    def declare():
        floor_idx = pm.Data("floor_idx", data["floor"].to_numpy(), dims="obs_id")
        return floor_idx, pm.Data("county_idx", county, dims="obs_id")

    return data["log_radon"], coords, declare


def _radon_model():
    """The gallery's ``varying_intercept_slope_noncentered`` radon model."""
    import pymc as pm

    log_radon, coords, declare = radon_data()
    with pm.Model(coords=coords) as model:
        floor_idx, county_idx = declare()
        mu_a = pm.Normal("mu_a", mu=0.0, sigma=10.0)
        sigma_a = pm.Exponential("sigma_a", 5)
        z_a = pm.Normal("z_a", mu=0, sigma=1, dims="county")
        alpha = mu_a + z_a * sigma_a
        mu_b = pm.Normal("mu_b", mu=0.0, sigma=10.0)
        sigma_b = pm.Exponential("sigma_b", 5)
        z_b = pm.Normal("z_b", mu=0, sigma=1, dims="county")
        beta = pm.Deterministic("beta", mu_b + z_b * sigma_b, dims="county")
        sigma_y = pm.Exponential("sigma_y", 5)
        y_hat = alpha[county_idx] + beta[county_idx] * floor_idx
        pm.Normal("y_like", mu=y_hat, sigma=sigma_y, observed=log_radon, dims="obs_id")
    return model


def _stochvol_model(n: int):
    """The gallery's stochastic-volatility model on the first ``n`` returns."""
    import pandas as pd
    import pymc as pm

    returns = pd.read_csv(DATA / "sp500.csv")["change"].to_numpy()[:n]
    with pm.Model(coords={"time": np.arange(n)}) as model:
        step_size = pm.Exponential("step_size", 10)
        volatility = pm.GaussianRandomWalk(
            "volatility", sigma=step_size, dims="time", init_dist=pm.Normal.dist(0, 100)
        )
        nu = pm.Exponential("nu", 0.1)
        pm.StudentT("returns", nu=nu, lam=np.exp(-2 * volatility), observed=returns, dims="time")
    return model


def log_evidence(name: str) -> float:
    """Exact log marginal likelihood of a ``gauss_regression`` or ``gauss_mixture`` target."""
    if _MIXTURE.match(name):
        return gauss_mixture(name).posterior()[3]
    reg = gauss_regression(name)
    n = reg.x.shape[0]
    cov = np.eye(n) + PRIOR_SD**2 * (reg.x @ reg.x.T)
    _, log_det = np.linalg.slogdet(cov)
    return float(-0.5 * (n * np.log(2 * np.pi) + log_det + reg.y @ np.linalg.solve(cov, reg.y)))


def _flatten(posterior) -> dict[str, np.ndarray]:
    """Every scalar of every variable as ``{"name[i]": draws}``."""
    out = {}
    for var in posterior.data_vars:
        values = np.asarray(posterior[var])
        flat = values.reshape(values.shape[0] * values.shape[1], -1)
        if flat.shape[1] == 1 and values.ndim == 2:
            out[var] = flat[:, 0]
        else:
            out.update({f"{var}[{i}]": flat[:, i] for i in range(flat.shape[1])})
    return out


@cache
def reference_moments(name: str) -> dict[str, tuple[float, float]]:
    """``{"name[i]": (mean, sd)}``: exact for regressions, a cached long nutpie run else."""
    if _REGRESSION.match(name):
        mean, cov = gauss_regression(name).posterior()
        sd = np.sqrt(np.diag(cov))
        return {f"beta[{i}]": (float(mean[i]), float(sd[i])) for i in range(len(mean))}
    if _MIXTURE.match(name):
        weights, means, covs, _ = gauss_mixture(name).posterior()
        mean = weights @ means
        second = np.einsum("k,kii->i", weights, covs) + weights @ means**2
        sd = np.sqrt(second - mean**2)
        return {f"x[{i}]": (float(mean[i]), float(sd[i])) for i in range(len(mean))}
    path = REFERENCES / f"{name}.json"
    if path.exists():
        return {k: tuple(v) for k, v in json.loads(path.read_text()).items()}
    import nutpie
    import pymc as pm

    with build_model(name) as model:
        free = [rv.name for rv in model.free_RVs]
    compiled = nutpie.compile_pymc_model(model)
    trace = nutpie.sample(compiled, draws=2000, tune=1000, chains=4, seed=12345, progress_bar=False)
    del pm
    from pymc_dilation._compat import group_dataset

    posterior = group_dataset(trace, "posterior")[free]  # a DataTree on PyMC 6
    moments = {
        key: (float(draws.mean()), float(draws.std(ddof=1)))
        for key, draws in _flatten(posterior).items()
    }
    REFERENCES.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(moments, indent=0))
    return moments


def moment_errors(idata, name: str) -> dict[str, float]:
    """Worst ``|mean − ref| / ref sd`` and worst ``|sd / ref sd − 1|`` over the reference's
    scalars."""
    from benchmarks.regressions import worst_moment_errors
    from pymc_dilation._compat import group_dataset

    return worst_moment_errors(_flatten(group_dataset(idata, "posterior")), reference_moments(name))
