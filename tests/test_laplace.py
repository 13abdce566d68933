"""The Laplace step of the population sampler: mode, curvature, whitening, and what it fixes."""

import numba
import numpy as np
import pytest

from pymc_dilation import sample_logdensity
from pymc_dilation.engine.kernels import (
    langevin_steps_compiled,
    langevin_steps_vectorized,
    point_function,
)
from pymc_dilation.engine.laplace import (
    laplace_approximation,
    newton_polish,
    root_inverse,
    root_log_det,
)

# A regression-like posterior: far from the origin, scales 1e-3..30, correlation -0.99.
MEAN = np.array([26.0, 0.6, 2.9])
SDS = np.array([6.0, 0.06, 0.004])
CORR = np.array([[1.0, -0.99, 0.0], [-0.99, 1.0, 0.1], [0.0, 0.1, 1.0]])
COV = CORR * np.outer(SDS, SDS)
PRECISION = np.linalg.inv(COV)


def gaussian_batch(xs):
    diff = xs - MEAN
    return -0.5 * np.einsum("ni,ij,nj->n", diff, PRECISION, diff), -diff @ PRECISION


@numba.njit
def _gaussian_point(x, precision):
    diff = x - np.array([26.0, 0.6, 2.9])
    prec = precision.reshape(3, 3)
    grad = -(prec @ diff)
    return np.array(0.5 * np.dot(diff, grad)), grad


gaussian_point = point_function(_gaussian_point)


def test_laplace_recovers_mode_and_covariance_of_a_gaussian():
    laplace = laplace_approximation(gaussian_batch, np.zeros(3))
    np.testing.assert_allclose(laplace.mode, MEAN, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(laplace.root @ laplace.root.T, COV, rtol=1e-4, atol=1e-12)
    z = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(laplace.to_whitened(laplace.to_density(z)), z, atol=1e-8)


def test_whitened_gradient_is_the_chain_rule():
    laplace = laplace_approximation(gaussian_batch, np.zeros(3))
    whitened = laplace.whiten(gaussian_batch)
    z = np.array([[0.3, -1.2, 0.5]])
    lp, grad = whitened(z)
    h = 1e-6
    numeric = [(whitened(z + h * e)[0] - whitened(z - h * e)[0])[0] / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(grad[0], numeric, rtol=1e-5)


def test_laplace_falls_back_to_the_identity_without_finite_curvature():
    def nowhere_finite_but_start(xs):
        lp = np.where(np.all(xs == 0.0, axis=1), 0.0, np.nan)
        return lp, np.zeros_like(xs)

    laplace = laplace_approximation(nowhere_finite_but_start, np.zeros(2))
    np.testing.assert_array_equal(laplace.root, np.eye(2))
    np.testing.assert_array_equal(laplace.mode, np.zeros(2))


def _two_bumps(xs):
    """Two quartic-Gaussian bumps, -inf where the first coordinate exceeds 7 (a support edge)."""
    xs = np.atleast_2d(xs)
    precision = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, 0.2], [0.0, 0.2, 0.5]])
    parts, grads = [], []
    for center in (np.zeros(3), np.array([4.0, 4.0, 0.0])):
        z = xs - center
        parts.append(-0.5 * np.einsum("ni,ij,nj->n", z, precision, z) - 0.1 * (z**4).sum(1))
        grads.append(-(z @ precision) - 0.4 * z**3)
    parts = np.array(parts)
    top = parts.max(axis=0)
    share = np.exp(parts - top)
    lp = top + np.log(share.sum(axis=0))
    grad = (share[:, :, None] * np.array(grads)).sum(axis=0) / share.sum(axis=0)[:, None]
    lp = np.where(xs[:, 0] > 7.0, -np.inf, lp)
    return lp, grad


def test_batched_newton_polish_matches_one_laplace_approximation_per_row():
    starts = np.array(
        [[0.3, -0.2, 0.1], [1.5, 1.0, -2.0], [3.0, 3.5, 0.4], [2.0, 2.0, 0.0], [8.0, 0.0, 0.0]]
    )
    modes, roots, converged, calls = newton_polish(_two_bumps, starts)
    for i, start in enumerate(starts):
        one = laplace_approximation(_two_bumps, start, max_iter=0, newton_steps=5)
        np.testing.assert_allclose(modes[i], one.mode, atol=1e-10)
        np.testing.assert_allclose(roots[i] @ roots[i].T, one.root @ one.root.T, atol=1e-8)
        assert converged[i] == one.converged
    assert not converged[-1]  # outside the support: no curvature, the start and the identity
    np.testing.assert_array_equal(modes[-1], starts[-1])
    assert calls > 0


def test_compiled_driver_applies_the_affine_map_like_the_vectorized_one():
    laplace = laplace_approximation(gaussian_batch, np.zeros(3))
    whitened = laplace.whiten(gaussian_batch)
    zs = np.random.default_rng(1).normal(size=(40, 3))
    lps, grads = whitened(zs)
    a = [zs.copy(), lps.copy(), grads.copy()]
    b = [zs.copy(), lps.copy(), grads.copy()]
    info_a = langevin_steps_compiled(
        gaussian_point, PRECISION.ravel(), *a, 0.5, np.ones(3), 6, np.random.default_rng(2),
        True, *laplace.affine(),
    )  # fmt: skip
    info_b = langevin_steps_vectorized(whitened, *b, 0.5, np.ones(3), 6, np.random.default_rng(2))
    for left, right in zip(a, b):
        np.testing.assert_allclose(left, right, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(info_a.acceptance_rate, info_b.acceptance_rate, atol=1e-10)


@pytest.mark.parametrize("precondition", ["laplace", "none"])
def test_population_reaches_a_far_ill_conditioned_posterior(precondition):
    # Before the mode map, "none" missed this posterior (one step size for scales 1e-3..30);
    # now the mode's own Gaussian whitens the importance draws and the refinement either way.
    result = sample_logdensity(
        gaussian_batch, 3, draws=2000, random_seed=3, precondition=precondition
    )
    mean_err = np.abs(result.samples.mean(axis=0) - MEAN) / SDS
    sd_err = np.abs(result.samples.std(axis=0) / SDS - 1)
    assert np.all(mean_err < 0.1) and np.all(sd_err < 0.1), (mean_err, sd_err)
    if precondition == "laplace":  # the Laplace step is counted
        assert result.stage_stats.attrs["n_grad_total"] > 2000 * result.n_grad


def test_center_map_starts_at_the_mode_and_option_errors_are_clear():
    result = sample_logdensity(gaussian_batch, 3, draws=500, random_seed=4, center="map")
    assert np.all(np.abs(result.samples.mean(axis=0) - MEAN) / SDS < 0.2)
    with pytest.raises(ValueError, match="precondition must be one of 'laplace', 'none'"):
        sample_logdensity(gaussian_batch, 3, precondition="dense")
    with pytest.raises(ValueError, match='center must be an array of dim values, "map" or None'):
        sample_logdensity(gaussian_batch, 3, center="mode")
    with pytest.raises(ValueError, match='center="map" needs precondition="laplace"'):
        sample_logdensity(gaussian_batch, 3, center="map", precondition="none")


def test_a_singular_optimum_is_told_from_a_mode():
    from pymc_dilation.engine.laplace import (
        LaplaceApproximation,
        reference_scale_approximation,
        singular_optimum,
    )

    reference = np.random.default_rng(0).normal([0.0, 1.0], [1.0, 2.0], size=(500, 2))
    narrow = np.diag([0.5, 1e-6])
    # far outside the prior's range and implausibly sharp there: a neck's bottom
    assert singular_optimum(
        LaplaceApproximation(np.array([0.0, -30.0]), narrow, 0, True), reference
    )
    # sharp but inside the prior's range (strong data), or far but as wide as the prior
    assert not singular_optimum(
        LaplaceApproximation(np.array([0.0, 2.0]), narrow, 0, True), reference
    )
    wide = np.diag([0.5, 1.0])
    assert not singular_optimum(
        LaplaceApproximation(np.array([0.0, -30.0]), wide, 0, True), reference
    )
    assert not singular_optimum(LaplaceApproximation(np.array([0.0, -30.0]), narrow, 0, True), None)
    fallback = reference_scale_approximation(np.zeros(2), reference, n_grad=7)
    assert not fallback.converged and fallback.n_grad == 7
    np.testing.assert_allclose(np.diag(fallback.root), reference.std(axis=0))


def test_newton_polish_stops_a_row_whose_curvature_stays_indefinite(monkeypatch):
    # A saddle everywhere (lp = -x² + y²/10): no optimum to polish. Each indefinite step costs
    # an eigendecomposition (163 s of a 521-parameter factor model's 214 s of tuning), so a
    # row stops at its second indefinite curvature; a concave row polishes to its optimum.
    from pymc_dilation.engine import laplace as laplace_module

    def saddle(xs):
        lp = -(xs[:, 0] ** 2) + 0.1 * xs[:, 1] ** 2
        return lp, np.column_stack([-2.0 * xs[:, 0], 0.2 * xs[:, 1]])

    hessians = []
    original = laplace_module._hessians

    def counting(logp_grad, points):
        hessians.append(len(points))
        return original(logp_grad, points)

    monkeypatch.setattr(laplace_module, "_hessians", counting)
    laplace_module.newton_polish(saddle, np.array([[0.5, 1.0]]))
    assert len(hessians) == 2

    def bowl(xs):
        return -np.sum((xs - 1.0) ** 2, axis=1), -2.0 * (xs - 1.0)

    hessians.clear()
    places, _, converged, _ = laplace_module.newton_polish(bowl, np.array([[0.5, 3.0]]))
    assert converged[0]
    np.testing.assert_allclose(places[0], [1.0, 1.0], atol=1e-8)


def test_newton_polish_in_batches_gives_the_same_polish(monkeypatch):
    # At d = 2900 one Hessian is 67 MB: rows are polished in batches that fit POLISH_MEMORY.
    from pymc_dilation.engine import laplace as laplace_module

    starts = np.array(
        [[0.3, -0.2, 0.1], [1.5, 1.0, -2.0], [3.0, 3.5, 0.4], [2.0, 2.0, 0.0], [8.0, 0.0, 0.0]]
    )
    whole = newton_polish(_two_bumps, starts)
    monkeypatch.setattr(laplace_module, "POLISH_MEMORY", 2 * 8 * 3 * 3)  # two rows a batch
    batched = laplace_module.newton_polish(_two_bumps, starts)
    for a, b in zip(whole[:3], batched[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert whole[3] == batched[3]


def test_root_inverse_and_log_det_match_lu_for_every_kind_of_root():
    # Upper (Cholesky roots), lower (moment-matched roots), diagonal (a known optimum's
    # identity) and full (eigen roots), one by one and stacked: the shortcuts agree with LU.
    rng = np.random.default_rng(4)
    full = rng.standard_normal((30, 30)) + 6 * np.eye(30)
    roots = np.stack([np.triu(full), np.tril(full), np.diag(np.diag(full)), full])
    np.testing.assert_allclose(root_inverse(roots), np.linalg.inv(roots), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(root_log_det(roots), np.linalg.slogdet(roots)[1], rtol=1e-12)
    np.testing.assert_allclose(root_inverse(roots[0]), np.linalg.inv(roots[0]), atol=1e-12)
    assert np.ndim(root_log_det(roots[1])) == 0


def test_upper_covariance_root_is_an_upper_triangular_root():
    from pymc_dilation.engine.laplace import upper_covariance_root

    rng = np.random.default_rng(3)
    a = rng.standard_normal((120, 120))
    cov = a @ a.T + 120 * np.eye(120)
    upper = upper_covariance_root(cov)
    assert not np.any(np.tril(upper, -1))
    np.testing.assert_allclose(upper @ upper.T, cov, rtol=1e-10, atol=1e-8)
    assert upper_covariance_root(-cov) is None


def test_bridge_frames_compose_into_triangular_whitenings_from_100_dimensions():
    # The bridge's frame root, composed with an upper-triangular Laplace root, stays
    # triangular (BLAS's triangular product for every evaluation) where that pays; the
    # frame's covariance is the mode's either way.
    from pymc_dilation.engine.laplace import TRIANGULAR_MIN_DIM, triangular_form
    from pymc_dilation.engine.modes import ModeMap
    from pymc_dilation.engine.population import _bridge_frame

    rng = np.random.default_rng(4)
    for dim in (TRIANGULAR_MIN_DIM - 10, TRIANGULAR_MIN_DIM):
        a = rng.standard_normal((dim, dim))
        lower = np.linalg.cholesky(a @ a.T + dim * np.eye(dim))
        modes = ModeMap(
            np.zeros((1, dim)), rng.normal(size=(1, dim)), lower[None], np.zeros(1),
            np.zeros(4, dtype=int), 0,
        )  # fmt: skip
        frame = _bridge_frame(modes, np.ones(1))
        np.testing.assert_allclose(frame.root @ frame.root.T, lower @ lower.T, atol=1e-8)
        np.testing.assert_array_equal(frame.mode, modes.means[0])
        assert triangular_form(frame.root) == (None, dim < TRIANGULAR_MIN_DIM)  # lower below


def _arrow_precision(groups: int, hypers: int, rng) -> np.ndarray:
    """A hierarchy's precision: hyperparameters first, each coupled to every group; groups
    of two parameters coupled only within the group."""
    dim = hypers + 2 * groups
    precision = np.zeros((dim, dim))
    precision[:hypers, :hypers] = np.eye(hypers) * (groups + 5.0)
    for g in range(groups):
        block = slice(hypers + 2 * g, hypers + 2 * g + 2)
        precision[block, block] = [[2.0, 0.5], [0.5, 1.5]]
        coupling = 0.1 * rng.standard_normal((hypers, 2))
        precision[:hypers, block] = coupling
        precision[block, :hypers] = coupling.T
    return precision


def test_a_hierarchys_laplace_root_is_sparse_and_exact():
    from pymc_dilation.engine.laplace import (
        SPARSE_ROOT_DENSITY,
        LaplaceApproximation,
        Whitened,
        _sparse_root,
        _upper_root,
        triangular_form,
    )

    rng = np.random.default_rng(5)
    precision = _arrow_precision(150, 4, rng)
    dim = len(precision)
    covariance = np.linalg.inv(precision)
    root = _sparse_root(-precision)
    # the plain Cholesky root fills in (hyperparameters first); this one does not
    assert np.count_nonzero(_upper_root(precision)) > 0.4 * dim**2
    assert np.count_nonzero(root) <= SPARSE_ROOT_DENSITY * dim**2
    np.testing.assert_allclose(root @ root.T, covariance, atol=1e-12)
    order, lower = triangular_form(root)
    assert order is not None and not lower
    assert not np.any(np.tril(root[order], -1))

    mode = rng.normal(size=dim)
    laplace = LaplaceApproximation(mode, root, 0, True)
    xs = rng.normal(size=(5, dim))
    np.testing.assert_allclose(laplace.to_density(laplace.to_whitened(xs)), xs, atol=1e-10)
    np.testing.assert_allclose(root_log_det(root), 0.5 * np.linalg.slogdet(covariance)[1])
    np.testing.assert_allclose(root_inverse(root), np.linalg.inv(root), atol=1e-9)

    def base(xs):  # any batched density: the products are what is tested
        return -0.5 * np.sum(xs**2, axis=1), -xs

    whitened = Whitened(base, mode, root)
    zs = rng.normal(size=(7, dim))
    lp, grad = whitened(zs)
    x = mode + zs @ root.T
    np.testing.assert_allclose(lp, base(x)[0], rtol=1e-12)
    np.testing.assert_allclose(grad, base(x)[1] @ root, atol=1e-10)
    assert whitened._sparse is not None
    # a permuted triangle that is not sparse: BLAS's triangular product, rows put back
    dense = Whitened(base, mode, root + 0.0)
    dense.__dict__["_sparse"] = None
    np.testing.assert_allclose(dense(zs)[1], grad, atol=1e-10)
    np.testing.assert_allclose(dense.to_density(zs), x, atol=1e-10)


def test_laplace_approximation_of_a_hierarchy_takes_the_sparse_root():
    rng = np.random.default_rng(6)
    precision = _arrow_precision(60, 3, rng)
    mean = rng.normal(size=len(precision))

    def logp_grad(xs):
        diff = xs - mean
        return -0.5 * np.einsum("ni,ij,nj->n", diff, precision, diff), -diff @ precision

    laplace = laplace_approximation(logp_grad, np.zeros(len(precision)))
    np.testing.assert_allclose(laplace.mode, mean, atol=1e-6)
    np.testing.assert_allclose(laplace.root @ laplace.root.T, np.linalg.inv(precision), atol=1e-8)
    assert np.count_nonzero(laplace.root) < 0.1 * len(precision) ** 2
