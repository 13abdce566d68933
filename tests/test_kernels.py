import numba
import numpy as np
import pytest

from pymc_dilation.engine.adaptation import DualAveraging, WindowCovariance, shrunk_root
from pymc_dilation.engine.kernels import (
    langevin_steps_compiled,
    langevin_steps_vectorized,
    mala_log_accept_ratio,
    point_function,
)

SCALES = np.array([1.0, 3.0, 0.5])


@numba.njit
def _gaussian(y, extra):
    return np.array(-0.5 * np.sum((y / extra) ** 2)), -y / extra**2


gaussian_point = point_function(_gaussian)


def gaussian_batch(ys):
    return -0.5 * np.sum((ys / SCALES) ** 2, axis=1), -ys / SCALES**2


def _start(n, rng):
    ys = rng.normal(size=(n, 3)) * SCALES
    lps, grads = gaussian_batch(ys)
    return ys, lps, grads


def test_compiled_and_vectorized_drivers_agree():
    ys, lps, grads = _start(50, np.random.default_rng(0))
    a = [arr.copy() for arr in (ys, lps, grads)]
    b = [arr.copy() for arr in (ys, lps, grads)]
    info_a = langevin_steps_compiled(
        gaussian_point, SCALES, *a, 0.3, np.ones(3), 7, np.random.default_rng(1)
    )
    info_b = langevin_steps_vectorized(
        gaussian_batch, *b, 0.3, np.ones(3), 7, np.random.default_rng(1)
    )
    for left, right in zip(a, b):
        np.testing.assert_allclose(left, right)
    np.testing.assert_allclose(info_a.acceptance_rate, info_b.acceptance_rate)


def test_mala_ratio_is_antisymmetric():
    rng = np.random.default_rng(2)
    y, y_prop = rng.normal(size=3), rng.normal(size=3)
    (lp, lp_prop), (g, g_prop) = gaussian_batch(np.stack([y, y_prop]))
    forward = mala_log_accept_ratio(y, lp, g, y_prop, lp_prop, g_prop, 0.4, SCALES**2)
    backward = mala_log_accept_ratio(y_prop, lp_prop, g_prop, y, lp, g, 0.4, SCALES**2)
    assert forward == pytest.approx(-backward)


@pytest.mark.parametrize("metropolis, should_match", [(True, True), (False, False)])
def test_mala_leaves_the_target_invariant_and_ula_does_not(metropolis, should_match):
    # Start exactly at the target; a large step keeps MALA exact but biases ULA.
    rng = np.random.default_rng(3)
    ys, lps, grads = _start(20_000, rng)
    langevin_steps_compiled(
        gaussian_point, SCALES, ys, lps, grads, 0.8, np.ones(3), 20, rng, metropolis
    )
    sds = ys.std(axis=0)
    matches = np.all(np.abs(sds / SCALES - 1) < 0.03)
    assert matches == should_match, sds


def test_non_finite_proposals_are_divergences_and_rejected():
    @numba.njit
    def _walled(y, extra):
        if y[0] > 0.5:
            return np.array(np.nan), y * np.nan
        return np.array(-0.5 * np.sum(y**2)), -y

    walled = point_function(_walled)

    ys = np.zeros((200, 2))
    lps, grads = np.zeros(200), np.zeros((200, 2))
    info = langevin_steps_compiled(
        walled, np.zeros(0), ys, lps, grads, 1.0, np.ones(2), 5, np.random.default_rng(4)
    )
    assert info.divergences.sum() > 0
    assert np.all(ys[:, 0] <= 0.5) and np.all(np.isfinite(lps))


def test_dual_averaging_reaches_the_target_acceptance():
    rng = np.random.default_rng(5)
    ys, lps, grads = _start(1, rng)
    adapt = DualAveraging(initial_step=5.0, target_accept=0.6)
    accepts = []
    for _ in range(3000):
        info = langevin_steps_compiled(
            gaussian_point, SCALES, ys, lps, grads, adapt.step_size, SCALES**2, 1, rng
        )
        adapt.update(float(info.acceptance_rate[0]))
        accepts.append(info.acceptance_rate[0])
    assert abs(np.mean(accepts[1000:]) - 0.6) < 0.05


def test_window_covariance_is_the_sample_covariance_shrunk_towards_the_prior():
    rng = np.random.default_rng(6)
    draws = rng.normal(size=(101, 3)) @ np.array([[1, 0, 0], [0.5, 2, 0], [0, 1, 3.0]])
    acc = WindowCovariance(3)
    for row in draws:
        acc.add(row)
    prior = np.eye(3)
    n = len(draws)
    expected = (n * np.cov(draws.T) + 8.0 * prior) / (n + 8.0)
    np.testing.assert_allclose(acc.covariance(prior, 8.0), expected)
    root = shrunk_root(expected, dense=True)
    np.testing.assert_allclose(root @ root.T, expected, rtol=1e-6)
    diagonal = shrunk_root(expected, dense=False)
    np.testing.assert_allclose(np.diag(diagonal) ** 2, np.diag(expected))


def test_batched_hmc_keeps_a_gaussian_and_reaches_it_from_far():
    # Exact Metropolis-adjusted trajectories with a diagonal mass: draws of N(0, diag(s^2))
    # stay so, and particles started 3 sds away arrive. At this step size unadjusted leapfrog
    # trajectories would inflate every variance by 1 / (1 - 0.9^2 / 4) = 1.25.
    from pymc_dilation.engine.kernels import hmc_steps_vectorized

    rng = np.random.default_rng(7)
    dim, n = 60, 4000
    sd = np.linspace(0.5, 2.0, dim)

    def logp_grad(x):
        return -0.5 * np.sum((x / sd) ** 2, axis=1), -x / sd**2

    for start in (rng.standard_normal((n, dim)) * sd, np.full((n, dim), 3.0) * sd):
        ys = start.copy()
        lps, grads = logp_grad(ys)
        for _ in range(12):
            info = hmc_steps_vectorized(logp_grad, ys, lps, grads, 0.9, 2, rng, sd**2)
        assert 0.3 < info.acceptance_rate.mean() < 1.0
        z = ys / sd
        assert np.abs(z.mean(axis=0)).max() < 5.0 / np.sqrt(n) * 1.5
        assert np.abs(z.var(axis=0) - 1.0).max() < 0.12
