"""The bridge from the mode map's mixture to the target (engine.tempering)."""

import numpy as np
import pytest

from pymc_dilation.engine.tempering import TEMPER_ESS, _ess_share, next_inverse_temperature, temper
from pymc_dilation.engine.weights import MixtureProposal


def _gaussian(mean, cov, log_scale):
    """An unnormalised Gaussian log density ``log_scale + log N(x; mean, cov) + const`` and its
    exact log evidence."""
    precision = np.linalg.inv(cov)
    dim = len(mean)
    log_z = log_scale + 0.5 * dim * np.log(2 * np.pi) + 0.5 * np.linalg.slogdet(cov)[1]

    def logp_grad(xs):
        r = xs - mean
        return log_scale - 0.5 * np.einsum("ni,ij,nj->n", r, precision, r), -r @ precision

    return logp_grad, log_z


def test_the_mixture_gradient_is_the_derivative_of_its_log_density():
    rng = np.random.default_rng(0)
    roots = np.tril(rng.normal(size=(2, 3, 3))) + 2 * np.eye(3)
    for defensive in (0.2, 0.0):
        q = MixtureProposal(rng.normal(size=(2, 3)), roots, np.array([0.3, 0.7]), defensive)
        xs = 2 * rng.normal(size=(6, 3))
        log_q, grad = q.log_density_and_grad(xs)
        np.testing.assert_allclose(log_q, q.log_density(xs))
        h = 1e-6
        numeric = np.column_stack(
            [(q.log_density(xs + h * e) - q.log_density(xs - h * e)) / (2 * h) for e in np.eye(3)]
        )
        np.testing.assert_allclose(grad, numeric, atol=1e-6)
    truncated = MixtureProposal(q.locations, q.roots, q.alphas, 0.0, tail=0.01)
    with pytest.raises(ValueError, match="truncated"):
        truncated.log_density_and_grad(xs)


def test_each_level_keeps_the_effective_sample_size_asked_for():
    log_ratio = np.random.default_rng(1).normal(0.0, 30.0, size=1000)
    beta = next_inverse_temperature(log_ratio, 0.2, 0.5)
    assert 0.2 < beta < 1.0
    assert _ess_share((beta - 0.2) * log_ratio) == pytest.approx(0.5, abs=1e-3)
    assert next_inverse_temperature(np.zeros(10), 0.3, 0.5) == 1.0  # q is the target already


def test_a_gaussian_is_bridged_to_with_its_moments_and_evidence():
    # From a unit Gaussian at 0 to a correlated Gaussian 1-2 sds away in 40 dimensions: one
    # importance step has ESS of a few particles; the bridge gets the moments and the exact
    # log evidence (a sampler without the reweighting would keep q's moments, 1-2 sd off).
    rng = np.random.default_rng(3)
    dim = 40
    a = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    cov = a @ a.T + 0.5 * np.eye(dim)
    mean = 1.5 * rng.normal(size=dim)
    logp_grad, log_z = _gaussian(mean, cov, 7.0)
    q = MixtureProposal(np.zeros((1, dim)), np.eye(dim)[None], np.ones(1), defensive=0.0)
    result = temper(logp_grad, q, 2000, np.random.default_rng(0))
    sd = np.sqrt(np.diag(cov))
    assert np.max(np.abs(result.xs.mean(axis=0) - mean) / sd) < 0.12
    assert np.max(np.abs(result.xs.std(axis=0) / sd - 1)) < 0.1
    assert abs(result.log_evidence - log_z) < max(0.2, 4 * result.log_evidence_se)
    assert result.betas[-1] == 1.0 and len(result.betas) > 2
    assert np.all(result.ess[:-1] == pytest.approx(TEMPER_ESS, abs=0.01))
    assert result.n_grad > len(result.betas)


def test_mode_masses_move_by_the_reweighting():
    # Two Gaussians of weights 0.2 and 0.8 and different widths, q proposing them evenly
    # with the wrong widths: the final particles' shares are the exact weights.
    means = np.array([[-4.0, 0.0], [4.0, 1.0]])
    scales = np.array([0.5, 1.5])
    weights = np.array([0.2, 0.8])

    def logp_grad(xs):
        parts = np.stack(
            [
                np.log(w) - np.sum((xs - m) ** 2, axis=1) / (2 * s**2) - 2 * np.log(s)
                for m, s, w in zip(means, scales, weights, strict=True)
            ],
            axis=1,
        )
        top = parts.max(axis=1, keepdims=True)
        resp = np.exp(parts - top)
        resp /= resp.sum(axis=1, keepdims=True)
        grads = [-(xs - m) / s**2 for m, s in zip(means, scales, strict=True)]
        return top[:, 0] + np.log(np.exp(parts - top).sum(axis=1)), sum(
            resp[:, [k]] * grads[k] for k in range(2)
        )

    q = MixtureProposal(means + 0.5, np.stack([np.eye(2), np.eye(2)]), np.array([0.5, 0.5]), 0.0)
    shares = []
    for seed in (1, 2):
        result = temper(logp_grad, q, 2000, np.random.default_rng(seed))
        shares.append(np.mean(result.xs[:, 0] < 0))
        # the mixture's log evidence: log (2π) (each part is a normalised 2-D Gaussian)
        assert abs(result.log_evidence - np.log(2 * np.pi)) < 0.1
    np.testing.assert_allclose(shares, 0.2, atol=0.03)
