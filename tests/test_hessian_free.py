"""Truncated Newton steps without Hessians, and the mode map's polish that uses them."""

import numpy as np
import pytest

from pymc_dilation.engine import modes as modes_module
from pymc_dilation.engine.hessian_free import (
    CG_ITERATIONS,
    _newton_directions,
    hessian_free_pays,
    truncated_newton,
)
from pymc_dilation.engine.modes import RIDGE_DECREMENT, map_modes

DIM = 80


def _gaussian(mean, cov):
    precision = np.linalg.inv(cov)

    def logp_grad(xs):
        diff = xs - mean
        return -0.5 * np.einsum("ni,ij,nj->n", diff, precision, diff), -diff @ precision

    return logp_grad, precision


def _random_covariance(rng, dim, condition):
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (basis * np.geomspace(1.0, condition, dim)) @ basis.T


def test_truncated_newton_reaches_the_optimum_of_a_correlated_gaussian_without_hessians():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=DIM)
    logp_grad, _ = _gaussian(mean, _random_covariance(rng, DIM, 10.0))
    starts = mean + 3.0 * rng.standard_normal((4, DIM))
    result = truncated_newton(logp_grad, starts)
    np.testing.assert_allclose(result.points, np.broadcast_to(mean, starts.shape), atol=1e-5)
    assert np.all(result.decrement < 1e-8)
    # Newton steps with Hessians would cost 6 Hessians of 2d gradients a row
    assert result.calls < 0.5 * len(starts) * 6 * 2 * DIM


def test_the_conjugate_gradient_decrement_is_a_lower_bound_that_tightens():
    rng = np.random.default_rng(2)
    logp_grad, precision = _gaussian(np.zeros(DIM), _random_covariance(rng, DIM, 100.0))
    xs = rng.standard_normal((3, DIM))
    _, grads = logp_grad(xs)
    exact = np.einsum("ki,ij,kj->k", grads, np.linalg.inv(precision), grads)
    previous = np.zeros(3)
    for iterations in (1, 3, 10, 40):
        _, decrement, _ = _newton_directions(logp_grad, xs, grads, iterations)
        assert np.all(decrement <= exact * (1 + 1e-6))
        assert np.all(decrement >= previous * (1 - 1e-9))
        previous = decrement
    # stopped at a relative residual of 0.1 (CG_TOLERANCE), not at the exact solution
    np.testing.assert_allclose(previous, exact, rtol=0.05)


def test_a_slope_without_curvature_has_no_finite_decrement():
    def slope(xs):  # rises without end along the first axis
        lp = xs[:, 0] - 0.5 * np.sum(xs[:, 1:] ** 2, axis=1)
        grad = -xs.copy()
        grad[:, 0] = 1.0
        return lp, grad

    result = truncated_newton(slope, np.zeros((2, DIM)))
    assert np.all(np.isinf(result.decrement))
    assert np.all(result.lps > 0)  # it still climbed (a gradient step, halved until better)


def test_the_hessian_free_polish_runs_only_where_it_costs_less():
    # 2 * CG_ITERATIONS gradients a conjugate-gradient step against 2d a Hessian
    assert not hessian_free_pays(10, 5) and not hessian_free_pays(CG_ITERATIONS, 5)
    assert hessian_free_pays(4 * CG_ITERATIONS, 5) and hessian_free_pays(1000, 5)


def _two_gaussians(rng, dim):
    """Weights 0.3 / 0.7, different covariances, 12 sds apart."""
    means = np.zeros((2, dim))
    means[1, 0] = 12.0
    covs = [_random_covariance(rng, dim, 4.0), np.diag(np.geomspace(0.5, 2.0, dim))]
    precisions = [np.linalg.inv(c) for c in covs]
    log_norm = [np.log(w) - 0.5 * np.linalg.slogdet(c)[1] for w, c in zip((0.3, 0.7), covs)]

    def logp_grad(xs):
        parts, grads = [], []
        for mean, precision, c in zip(means, precisions, log_norm):
            diff = xs - mean
            parts.append(c - 0.5 * np.einsum("ni,ij,nj->n", diff, precision, diff))
            grads.append(-diff @ precision)
        parts = np.array(parts)
        top = parts.max(axis=0)
        share = np.exp(parts - top)
        share /= share.sum(axis=0)
        lp = top + np.log(np.exp(parts - top).sum(axis=0))
        return lp, share[0][:, None] * grads[0] + share[1][:, None] * grads[1]

    return logp_grad, means, covs


def test_the_map_of_two_gaussians_in_60_dimensions_takes_hessians_only_at_the_modes(
    monkeypatch,
):
    rng = np.random.default_rng(3)
    dim = 60
    logp_grad, means, covs = _two_gaussians(rng, dim)
    ys = means[rng.integers(2, size=64)] + 2.5 * rng.standard_normal((64, dim))
    polished = []
    polish = modes_module.newton_polish

    def counting_polish(logp_grad, starts, *args, **kwargs):
        polished.append(len(starts))
        return polish(logp_grad, starts, *args, **kwargs)

    monkeypatch.setattr(modes_module, "newton_polish", counting_polish)
    modes = map_modes(logp_grad, ys, *logp_grad(ys))
    assert modes.n_modes == 2
    assert sum(polished) <= 2  # one Hessian-polished optimum per mode at most
    order = np.argsort(modes.locations[:, 0])
    for k, mode in enumerate(order):
        np.testing.assert_allclose(modes.locations[mode], means[k], atol=1e-4)
        # the Laplace covariance where the mode had too few particles for its moments
        cov = modes.roots[mode] @ modes.roots[mode].T
        np.testing.assert_allclose(cov, covs[k], atol=1e-3 * np.abs(covs[k]).max())


@pytest.mark.parametrize("steps", [1, 5])
def test_rows_left_far_from_an_optimum_are_ridges_and_cost_no_hessian(monkeypatch, steps):
    # A curved ridge (a banana): the log density rises along the parabola x1 = x0² towards
    # x0 = 20 and falls steeply across it. Truncated Newton steps from its low end do not
    # reach the top (nor did 5 Newton steps with Hessians: decrement 3.8): the decrement
    # bound stays above RIDGE_DECREMENT, and the row is judged no mode without a Hessian.
    dim = 60

    def banana(xs):
        across = xs[:, 1] - xs[:, 0] ** 2
        lp = -50.0 * across**2 - 0.5 * (xs[:, 0] - 20.0) ** 2 / 4.0
        lp = lp - 0.5 * np.sum(xs[:, 2:] ** 2, axis=1)
        grad = -xs.copy()
        grad[:, 1] = -100.0 * across
        grad[:, 0] = 200.0 * across * xs[:, 0] - (xs[:, 0] - 20.0) / 4.0
        return lp, grad

    start = np.zeros((1, dim))
    start[0, :2] = [-3.0, 9.0]
    monkeypatch.setattr(modes_module, "POLISH_STEPS", steps)
    polished = []
    monkeypatch.setattr(modes_module, "newton_polish", lambda *a, **k: polished.append(a))
    lps, _ = banana(start)
    _, _, converged, ridge, _ = modes_module._polish(
        banana, start, lps, None, modes_module.VALLEY_DEPTH
    )
    result = truncated_newton(banana, start, steps)
    assert result.decrement[0] > RIDGE_DECREMENT
    assert ridge[0] and converged[0] and polished == []
