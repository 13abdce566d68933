"""Shared fixtures: small models whose posteriors are known exactly, and input-check helpers."""

import re

import numpy as np
import pymc as pm
import pytest


def _posterior_draws(idata, name):
    return np.asarray(idata.posterior[name]).reshape(-1)


@pytest.fixture(scope="session")
def draws_of():
    return _posterior_draws


@pytest.fixture(scope="session")
def conjugate_normal():
    """y_i ~ N(mu, 2), mu ~ N(1, 3): posterior N(m, s) in closed form."""
    rng = np.random.default_rng(0)
    y = rng.normal(3.0, 2.0, size=20)
    prior_mu, prior_sd, noise_sd = 1.0, 3.0, 2.0
    precision = 1 / prior_sd**2 + len(y) / noise_sd**2
    mean = (prior_mu / prior_sd**2 + y.sum() / noise_sd**2) / precision
    with pm.Model() as model:
        mu = pm.Normal("mu", prior_mu, prior_sd)
        pm.Normal("y", mu, noise_sd, observed=y)
    return model, mean, precision**-0.5


@pytest.fixture(scope="session")
def beta_binomial():
    """p ~ Beta(2, 3), 7 successes in 20 trials: posterior Beta(9, 16)."""
    with pm.Model() as model:
        p = pm.Beta("p", 2.0, 3.0)
        pm.Binomial("k", n=20, p=p, observed=7)
    a, b = 9.0, 16.0
    mean = a / (a + b)
    sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return model, mean, sd


@pytest.fixture(scope="session")
def normal_scale():
    """y_i ~ N(0, sigma), precision tau = sigma^-2 ~ Gamma(3, 2): posterior Gamma."""
    rng = np.random.default_rng(1)
    y = rng.normal(0.0, 1.5, size=30)
    alpha, beta = 3.0, 2.0
    with pm.Model() as model:
        tau = pm.Gamma("tau", alpha, beta)
        pm.Normal("y", 0.0, tau=tau, observed=y)
    a_post, b_post = alpha + len(y) / 2, beta + (y**2).sum() / 2
    return model, a_post / b_post, np.sqrt(a_post) / b_post


def bimodal_model(weight: float = 0.5, left: float = -4.0, right: float = 4.0):
    """x ~ N(0, 10) times a two-component unit-variance mixture."""
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, 10.0)
        components = pm.math.stack(
            [
                np.log(weight) + pm.logp(pm.Normal.dist(left, 1.0), x),
                np.log(1 - weight) + pm.logp(pm.Normal.dist(right, 1.0), x),
            ]
        )
        pm.Potential("mixture", pm.math.logsumexp(components))
    return model


@pytest.fixture(scope="module")
def scale_model():
    """mu ~ N(0, 5) (untransformed), sigma ~ HalfNormal (sigma_log__), w ~ Dirichlet (simplex)."""
    y = np.random.default_rng(0).normal(1.0, 2.0, size=20)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 5.0)
        sigma = pm.HalfNormal("sigma", 5.0)
        pm.Dirichlet("w", np.ones(3))
        pm.Deterministic("twice_mu", 2 * mu)
        pm.Normal("y", mu, sigma, observed=y)
    return model


def raises_with(exc, fn, *fragments):
    """Call ``fn``; it must raise ``exc`` whose message contains every fragment."""
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert re.search(fragment, message), (fragment, message)
    return message


@pytest.fixture
def pymc_messages():
    """The messages logged on PyMC's logger (INFO and above) while the test runs."""
    import logging

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    logger = logging.getLogger("pymc")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)
