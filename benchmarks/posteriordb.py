"""PyMC ports of eight posteriordb reference posteriors, with loaders and reference moments.

The posteriors live in a ``posteriordb`` folder (see :func:`posteriordb_dir`) holding one
sub-folder per posterior with ``posterior.json``, ``data.json.zip`` (one JSON object) and
``reference_draws.json.zip`` (a JSON list of chains, each mapping a 1-based parameter name such
as ``beta[2]`` to its draws). The models follow ``MODELS.md`` in that folder, which mirrors the
Stan programs of the public posterior database.

Typical use::

    import pymc as pm
    from benchmarks import posteriordb as pdb

    model = pdb.build_model("kidiq-kidscore_momiq")
    with model:
        idata = pm.sample(chains=2, cores=1, random_seed=1)
    errors = pdb.moment_errors(idata, "kidiq-kidscore_momiq")

Everything that differs between PyMC 5 and PyMC 6 is kept in the small private helpers
:func:`_ordered_transform` and :func:`_posterior_dataarray`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

__all__ = [
    "ENV_VAR",
    "POSTERIOR_NAMES",
    "build_model",
    "load_data",
    "load_reference_draws",
    "moment_errors",
    "posterior_moments",
    "posteriordb_dir",
    "reference_moments",
]

ENV_VAR = "PYMC_DILATION_POSTERIORDB"
"""Environment variable that overrides the location of the posteriordb folder."""

POSTERIOR_NAMES: tuple[str, ...] = (
    "eight_schools-eight_schools_noncentered",
    "kidiq-kidscore_momiq",
    "arK-arK",
    "garch-garch11",
    "gp_pois_regr-gp_pois_regr",
    "sblrc-blr",
    "low_dim_gauss_mix-low_dim_gauss_mix",
    "earnings-logearn_interaction_z",
)
"""Names (folder names) of the available reference posteriors."""

_PARAM_RE = re.compile(r"^(?P<var>[^\[\]]+)(?:\[(?P<idx>[0-9]+(?:\s*,\s*[0-9]+)*)\])?$")


# --------------------------------------------------------------------------------------------
# Locating and loading files
# --------------------------------------------------------------------------------------------


def posteriordb_dir() -> Path:
    """Return the folder that holds the reference posteriors.

    Returns
    -------
    pathlib.Path
        The value of the environment variable ``PYMC_DILATION_POSTERIORDB`` if it is set and
        non-empty, else ``<repo parent>/shared/posteriordb`` (the repository is expected to be
        cloned next to ``shared/``).

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser().resolve()
        origin = f"environment variable {ENV_VAR}"
    else:
        path = Path(__file__).resolve().parents[2] / "shared" / "posteriordb"
        origin = "default location (repository cloned next to 'shared/')"
    if not path.is_dir():
        raise FileNotFoundError(
            f"posteriordb folder not found at {path} ({origin}). Set {ENV_VAR} to the folder "
            "holding the posterior sub-folders (e.g. 'eight_schools-eight_schools_noncentered/')."
        )
    return path


def _check_name(name: str) -> str:
    """Validate a posterior name and return it."""
    if name not in POSTERIOR_NAMES:
        raise KeyError(f"unknown posterior {name!r}; expected one of {', '.join(POSTERIOR_NAMES)}")
    return name


def _posterior_file(name: str, filename: str) -> Path:
    """Return the path of ``filename`` inside the folder of posterior ``name``."""
    path = posteriordb_dir() / _check_name(name) / filename
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    return path


@functools.lru_cache(maxsize=32)
def _read_json_zip(path: str) -> Any:
    """Read the single JSON file inside a zip archive, in memory (cached by path)."""
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.namelist() if not m.endswith("/")]
        json_members = [m for m in members if m.endswith(".json")] or members
        if len(json_members) != 1:
            raise ValueError(f"expected exactly one JSON file in {path}, found {members}")
        with archive.open(json_members[0]) as fh:
            return json.load(fh)


@functools.lru_cache(maxsize=32)
def _read_reference_draws(path: str) -> dict[str, np.ndarray]:
    """Read reference draws and pool the chains (cached by path; arrays are read-only)."""
    chains = _read_json_zip(path)
    if not isinstance(chains, list) or not chains:
        raise ValueError(f"{path} should hold a non-empty JSON list of chains")
    pooled: dict[str, np.ndarray] = {}
    for param in chains[0]:
        values = np.concatenate([np.asarray(chain[param], dtype=float) for chain in chains])
        values.setflags(write=False)
        pooled[param] = values
    return pooled


def load_data(name: str) -> dict[str, Any]:
    """Load the data of a reference posterior.

    The zip archive is read in memory (nothing is extracted to disk) and the parsed JSON is
    cached with :func:`functools.lru_cache`; each call returns a fresh deep copy, so callers may
    modify it.

    Parameters
    ----------
    name : str
        One of :data:`POSTERIOR_NAMES`.

    Returns
    -------
    dict
        The JSON object of ``data.json.zip`` (lists and numbers, as in the file).
    """
    return copy.deepcopy(_read_json_zip(str(_posterior_file(name, "data.json.zip"))))


def load_reference_draws(name: str) -> dict[str, np.ndarray]:
    """Load the reference draws of a posterior, with all chains concatenated.

    Parameters
    ----------
    name : str
        One of :data:`POSTERIOR_NAMES`.

    Returns
    -------
    dict of str to numpy.ndarray
        Parameter name as in the reference (1-based, e.g. ``"beta[2]"``) to a read-only 1-D
        array of the draws of every chain, concatenated in chain order. Parsed arrays are cached
        with :func:`functools.lru_cache`; the returned dict itself is a new one on each call.
    """
    return dict(_read_reference_draws(str(_posterior_file(name, "reference_draws.json.zip"))))


# --------------------------------------------------------------------------------------------
# PyMC 5 / 6 compatibility helpers
# --------------------------------------------------------------------------------------------


def _ordered_transform() -> Any:
    """Return PyMC's ordered-vector transform.

    PyMC 5 and 6 both expose the instance ``pymc.distributions.transforms.ordered`` (PyMC 6's
    ``Ordered`` class additionally declares ``ndim_supp = 1``; PyMC 5 instead sums the
    elementwise logp itself when the Jacobian has fewer dimensions). Fall back to constructing
    ``Ordered()`` should the module-level instance ever be removed.
    """
    transforms = pm.distributions.transforms
    instance = getattr(transforms, "ordered", None)
    if instance is not None:
        return instance
    return transforms.Ordered()


def _posterior_dataarray(idata: Any, var: str) -> Any:
    """Return ``var`` from the posterior group of an ``InferenceData`` or ``xarray.DataTree``.

    ``pm.sample`` returns ``arviz.InferenceData`` on PyMC 5 and ``xarray.DataTree`` on PyMC 6;
    both support ``idata.posterior[var]`` (a DataTree node returns a ``DataArray``).
    """
    try:
        posterior = idata.posterior
    except AttributeError:
        try:
            posterior = idata["posterior"]
        except (KeyError, TypeError) as err:
            raise ValueError("idata has no 'posterior' group") from err
    try:
        return posterior[var]
    except KeyError as err:
        raise KeyError(f"variable {var!r} not found in the posterior group") from err


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _eight_schools_noncentered(data: dict[str, Any]) -> pm.Model:
    y = np.asarray(data["y"], dtype=float)
    sigma = np.asarray(data["sigma"], dtype=float)
    with pm.Model() as model:
        mu = pm.Normal("mu", mu=0.0, sigma=5.0)
        tau = pm.HalfCauchy("tau", beta=5.0)
        theta_trans = pm.Normal("theta_trans", mu=0.0, sigma=1.0, shape=len(y))
        theta = pm.Deterministic("theta", mu + tau * theta_trans)
        pm.Normal("y", mu=theta, sigma=sigma, observed=y)
    return model


def _kidscore_momiq(data: dict[str, Any]) -> pm.Model:
    kid_score = np.asarray(data["kid_score"], dtype=float)
    mom_iq = np.asarray(data["mom_iq"], dtype=float)
    with pm.Model() as model:
        beta = pm.Flat("beta", shape=2)
        sigma = pm.HalfCauchy("sigma", beta=2.5)
        pm.Normal("kid_score", mu=beta[0] + beta[1] * mom_iq, sigma=sigma, observed=kid_score)
    return model


def _ark(data: dict[str, Any]) -> pm.Model:
    k = int(data["K"])
    y = np.asarray(data["y"], dtype=float)
    n = len(y)
    # lags[i, j] = y_{t-(j+1)} for the modelled times t = K+1..T (0-based rows t-1 = K..T-1).
    lags = np.column_stack([y[k - lag : n - lag] for lag in range(1, k + 1)])
    with pm.Model() as model:
        alpha = pm.Normal("alpha", mu=0.0, sigma=10.0)
        beta = pm.Normal("beta", mu=0.0, sigma=10.0, shape=k)
        sigma = pm.HalfCauchy("sigma", beta=2.5)
        pm.Normal("y", mu=alpha + pt.dot(lags, beta), sigma=sigma, observed=y[k:])
    return model


def _garch11(data: dict[str, Any]) -> pm.Model:
    y = np.asarray(data["y"], dtype=float)
    n = len(y)
    sigma1 = float(data["sigma1"])
    lag = np.subtract.outer(np.arange(n), np.arange(n))
    lower = (lag >= 0).astype(float)
    lag_clipped = np.maximum(lag, 0).astype(float)
    with pm.Model() as model:
        mu = pm.Flat("mu")
        alpha0 = pm.HalfFlat("alpha0")
        alpha1 = pm.Uniform("alpha1", lower=0.0, upper=1.0)
        # Flat prior on beta1 over (0, 1 - alpha1): beta1 = (1 - alpha1) * u with u in (0, 1);
        # the density in u carries the Jacobian d beta1 / d u = 1 - alpha1.
        beta1_u = pm.Uniform("beta1_u", lower=0.0, upper=1.0)
        beta1 = pm.Deterministic("beta1", (1.0 - alpha1) * beta1_u)
        pm.Potential("beta1_jacobian", pt.log1p(-alpha1))
        # Variance recursion s_t = c_t + beta1 * s_{t-1}, s_1 = sigma1^2, with
        # c_t = alpha0 + alpha1 * (y_{t-1} - mu)^2. It is linear in c, so
        # s = P @ c with P[t, j] = beta1^(t - j) for j <= t (and c_1 = sigma1^2): the Stan loop
        # without a pytensor scan (about 2x cheaper per gradient than scan for T = 200; a
        # log2(T)-step prefix scan made gradient compilation hang).
        c = pt.concatenate(
            [pt.as_tensor_variable([sigma1**2]), alpha0 + alpha1 * (y[:-1] - mu) ** 2]
        )
        decay = lower * pt.exp(lag_clipped * pt.log(beta1))
        sigma = pt.sqrt(pt.dot(decay, c))
        pm.Normal("y", mu=mu, sigma=sigma, observed=y)
    return model


def _gp_pois_regr(data: dict[str, Any]) -> pm.Model:
    x = np.asarray(data["x"], dtype=float)
    k = np.asarray(data["k"], dtype=int)
    n = len(x)
    sq_dist = (x[:, None] - x[None, :]) ** 2
    with pm.Model() as model:
        rho = pm.Gamma("rho", alpha=25.0, beta=4.0)
        alpha = pm.HalfNormal("alpha", sigma=2.0)
        f_tilde = pm.Normal("f_tilde", mu=0.0, sigma=1.0, shape=n)
        cov = alpha**2 * pt.exp(-sq_dist / (2.0 * rho**2)) + 1e-10 * np.eye(n)
        chol = pt.linalg.cholesky(cov)
        f = pm.Deterministic("f", pt.dot(chol, f_tilde))
        pm.Poisson("k", mu=pt.exp(f), observed=k)
    return model


def _blr(data: dict[str, Any]) -> pm.Model:
    x = np.asarray(data["X"], dtype=float)
    y = np.asarray(data["y"], dtype=float)
    with pm.Model() as model:
        beta = pm.Normal("beta", mu=0.0, sigma=10.0, shape=x.shape[1])
        sigma = pm.HalfNormal("sigma", sigma=10.0)
        pm.Normal("y", mu=pt.dot(x, beta), sigma=sigma, observed=y)
    return model


def _low_dim_gauss_mix(data: dict[str, Any]) -> pm.Model:
    y = np.asarray(data["y"], dtype=float)
    with pm.Model() as model:
        # The ordered transform needs a strictly increasing starting value.
        mu = pm.Normal(
            "mu",
            mu=0.0,
            sigma=2.0,
            shape=2,
            transform=_ordered_transform(),
            initval=np.array([-1.0, 1.0]),
        )
        sigma = pm.HalfNormal("sigma", sigma=2.0, shape=2)
        theta = pm.Beta("theta", alpha=5.0, beta=5.0)
        weights = pt.stack([theta, 1.0 - theta])
        pm.NormalMixture("y", w=weights, mu=mu, sigma=sigma, observed=y)
    return model


def _logearn_interaction_z(data: dict[str, Any]) -> pm.Model:
    earn = np.asarray(data["earn"], dtype=float)
    height = np.asarray(data["height"], dtype=float)
    male = np.asarray(data["male"], dtype=float)
    log_earn = np.log(earn)
    z = (height - height.mean()) / height.std(ddof=1)
    with pm.Model() as model:
        beta = pm.Flat("beta", shape=4)
        sigma = pm.HalfFlat("sigma")
        mean = beta[0] + beta[1] * z + beta[2] * male + beta[3] * z * male
        pm.Normal("log_earn", mu=mean, sigma=sigma, observed=log_earn)
    return model


_BUILDERS: dict[str, Callable[[dict[str, Any]], pm.Model]] = {
    "eight_schools-eight_schools_noncentered": _eight_schools_noncentered,
    "kidiq-kidscore_momiq": _kidscore_momiq,
    "arK-arK": _ark,
    "garch-garch11": _garch11,
    "gp_pois_regr-gp_pois_regr": _gp_pois_regr,
    "sblrc-blr": _blr,
    "low_dim_gauss_mix-low_dim_gauss_mix": _low_dim_gauss_mix,
    "earnings-logearn_interaction_z": _logearn_interaction_z,
}


def build_model(name: str) -> pm.Model:
    """Build the PyMC model of a reference posterior.

    Every reference parameter maps to a PyMC variable of the same base name (derived ones, such
    as ``theta`` in eight schools, ``f`` in gp_pois_regr and ``beta1`` in garch11, are
    ``pm.Deterministic``). Improper flat priors are ``pm.Flat`` / ``pm.HalfFlat``, so the
    models have no prior draws for those variables.

    Parameters
    ----------
    name : str
        One of :data:`POSTERIOR_NAMES`.

    Returns
    -------
    pymc.Model
        A fresh model with the data embedded as constants.
    """
    return _BUILDERS[_check_name(name)](load_data(name))


# --------------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------------


def _split_param(param: str) -> tuple[str, tuple[int, ...]]:
    """Split ``"beta[2]"`` into ``("beta", (1,))`` (0-based indices); scalars get ``()``."""
    match = _PARAM_RE.match(param.strip())
    if match is None:
        raise ValueError(f"cannot parse parameter name {param!r}")
    idx = match.group("idx")
    if idx is None:
        return match.group("var"), ()
    return match.group("var"), tuple(int(i) - 1 for i in idx.split(","))


def _pooled_draws(idata: Any, var: str) -> np.ndarray:
    """Return the draws of ``var`` with chain and draw pooled into the first axis."""
    da = _posterior_dataarray(idata, var)
    sample_dims = [d for d in ("chain", "draw") if d in da.dims]
    other_dims = [d for d in da.dims if d not in sample_dims]
    values = np.asarray(da.transpose(*sample_dims, *other_dims).values, dtype=float)
    n_samples = int(np.prod(values.shape[: len(sample_dims)], dtype=int))
    return values.reshape(n_samples, *values.shape[len(sample_dims) :])


def reference_moments(name: str) -> dict[str, tuple[float, float]]:
    """Posterior mean and standard deviation of every reference parameter.

    Parameters
    ----------
    name : str
        One of :data:`POSTERIOR_NAMES`.

    Returns
    -------
    dict of str to (float, float)
        Reference parameter name (e.g. ``"beta[2]"``) to ``(mean, sd)`` over all reference
        draws (sd with ``ddof=1``).
    """
    return {
        param: (float(np.mean(draws)), float(np.std(draws, ddof=1)))
        for param, draws in load_reference_draws(name).items()
    }


def posterior_moments(idata: Any, name: str) -> dict[str, tuple[float, float]]:
    """Posterior mean and standard deviation of every reference parameter from a PyMC fit.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        What ``pm.sample`` returns (PyMC 5 or 6); only its ``posterior`` group is used.
    name : str
        One of :data:`POSTERIOR_NAMES`.

    Returns
    -------
    dict of str to (float, float)
        Same keys as :func:`reference_moments`. Chains and draws are pooled; ``beta[2]`` is
        index 1 along the first axis after ``chain`` and ``draw`` (sd with ``ddof=1``).
    """
    moments: dict[str, tuple[float, float]] = {}
    cache: dict[str, np.ndarray] = {}
    for param in load_reference_draws(name):
        var, idx = _split_param(param)
        if var not in cache:
            cache[var] = _pooled_draws(idata, var)
        draws = cache[var]
        if draws.ndim - 1 != len(idx):
            raise ValueError(
                f"parameter {param!r} has {len(idx)} indices but posterior variable {var!r} "
                f"has shape {draws.shape[1:]}"
            )
        values = draws[(slice(None), *idx)]
        moments[param] = (float(np.mean(values)), float(np.std(values, ddof=1)))
    return moments


def moment_errors(idata: Any, name: str) -> list[dict[str, Any]]:
    """Standardised errors of the posterior means and sds against the reference.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        What ``pm.sample`` returns (PyMC 5 or 6).
    name : str
        One of :data:`POSTERIOR_NAMES`.

    Returns
    -------
    list of dict
        One dict per reference parameter, in reference order, with keys ``name``,
        ``ref_mean``, ``ref_sd``, ``mean``, ``sd``, ``mean_err = |mean - ref_mean| / ref_sd``
        and ``sd_err = |sd / ref_sd - 1|``.
    """
    reference = reference_moments(name)
    estimate = posterior_moments(idata, name)
    rows: list[dict[str, Any]] = []
    for param, (ref_mean, ref_sd) in reference.items():
        mean, sd = estimate[param]
        rows.append(
            {
                "name": param,
                "ref_mean": ref_mean,
                "ref_sd": ref_sd,
                "mean": mean,
                "sd": sd,
                "mean_err": abs(mean - ref_mean) / ref_sd,
                "sd_err": abs(sd / ref_sd - 1.0),
            }
        )
    return rows
