"""The preconditioner (diagonal plus low rank, from draws and gradients) and the HMC kernel."""

import numba
import numpy as np
import pytest

from pymc_dilation.engine.adaptation import DualAveraging, TrajectoryLength, UTurnLengths
from pymc_dilation.engine.kernels import point_function
from pymc_dilation.engine.metric import (
    Metric,
    estimate_metric,
    metric_from_covariance,
    noise_cutoff,
    whitened_variances,
)
from pymc_dilation.engine.trajectory import hmc_trajectory
from pymc_dilation.engine.tuning import CAPPED_MIN_DIM, CONTRADICTED_MAX_RANK, ChainTuning


def _correlated_gaussian(dim, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dim, dim))
    covariance = a @ a.T / dim + np.diag(np.exp(rng.normal(0.0, 2.0, dim)))
    return covariance, np.linalg.inv(covariance), np.linalg.cholesky(covariance)


def _ar1_gaussian(dim, rho, seed):
    """Strongly correlated (AR(1)) coordinates on scales spread over two orders of magnitude."""
    scales = np.exp(np.random.default_rng(seed).normal(0.0, 1.0, dim))
    lags = np.abs(np.subtract.outer(np.arange(dim), np.arange(dim)))
    covariance = rho**lags * np.outer(scales, scales)
    return covariance, np.linalg.inv(covariance), np.linalg.cholesky(covariance)


def _whitened_eigenvalues(metric, covariance):
    root = metric.root()
    whitened = np.linalg.solve(root, np.linalg.solve(root, covariance).T)
    return np.linalg.eigvalsh(whitened)


def test_metric_maps_are_consistent():
    covariance, _, _ = _correlated_gaussian(12, 0)
    metric = metric_from_covariance(covariance, max_rank=5)
    rng = np.random.default_rng(1)
    u = rng.standard_normal((4, 12))
    root = metric.root()
    np.testing.assert_allclose(metric.to_density(u), u @ root.T, atol=1e-12)
    np.testing.assert_allclose(metric.to_whitened(metric.to_density(u)), u, atol=1e-12)
    np.testing.assert_allclose(metric.gradient_to_whitened(u), u @ root, atol=1e-12)
    np.testing.assert_allclose(
        metric.gradient_to_density(metric.gradient_to_whitened(u)), u, atol=1e-12
    )
    assert metric.log_det_root == pytest.approx(np.linalg.slogdet(root)[1])
    assert metric.rank <= 5  # eigenvalues within the cutoff of 1 are not corrected


def test_dense_metric_is_the_covariance_and_low_rank_bounds_the_whitened_spectrum():
    covariance, precision, _ = _correlated_gaussian(30, 2)
    exact = metric_from_covariance(covariance, cutoff=1.0)
    np.testing.assert_allclose(exact.covariance(), covariance, atol=1e-10)
    low_rank = metric_from_covariance(covariance, precision, max_rank=30, cutoff=2.0)
    eigenvalues = _whitened_eigenvalues(low_rank, covariance)
    assert eigenvalues.min() > 0.45 and eigenvalues.max() < 2.2
    diagonal = metric_from_covariance(covariance, precision, max_rank=0)
    assert diagonal.rank == 0
    spread = _whitened_eigenvalues(diagonal, covariance)
    assert spread.max() / spread.min() > 5  # the correlations a diagonal cannot describe


def test_estimate_from_draws_and_gradients_learns_more_directions_than_draws():
    # 40 draws of a 60-D AR(1) Gaussian (condition number ~10^4 after scaling): the draws
    # alone span 39 directions (their dense covariance leaves a whitened spread of ~10^6),
    # their variances leave ~1500; with the gradients the spread is ~30.
    covariance, precision, chol = _ar1_gaussian(60, 0.95, 3)
    rng = np.random.default_rng(4)
    draws = rng.standard_normal((40, 60)) @ chol.T
    grads = -draws @ precision
    estimate = estimate_metric(draws, grads, max_rank=60)
    eigenvalues = _whitened_eigenvalues(estimate, covariance)
    assert eigenvalues.max() / eigenvalues.min() < 60
    only_draws = metric_from_covariance(np.diag(draws.var(axis=0)), max_rank=0)
    spread = _whitened_eigenvalues(only_draws, covariance)
    assert spread.max() / spread.min() > 500


def test_a_correction_in_whitened_coordinates_keeps_an_exact_metric():
    # Where the metric already whitens the posterior, a window of few draws must not spoil it:
    # the noise cutoff leaves the correction at the identity.
    covariance, precision, chol = _correlated_gaussian(200, 5)
    metric = metric_from_covariance(covariance, cutoff=1.0)
    rng = np.random.default_rng(6)
    draws = rng.standard_normal((25, 200)) @ chol.T
    grads = -draws @ precision
    cutoff = noise_cutoff(25, 200)
    assert 5.0 < cutoff < 6.0
    correction = estimate_metric(
        metric.to_whitened(draws), metric.gradient_to_whitened(grads), 200, cutoff
    )
    refined = metric.refined(correction, 200, 1.0)
    eigenvalues = _whitened_eigenvalues(refined, covariance)
    assert eigenvalues.min() > 0.7 and eigenvalues.max() < 1.4


def _random_metric(dim, rank, rng):
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0] if rank else np.zeros((dim, 0))
    return Metric(np.exp(rng.normal(0.0, 0.7, dim)), basis, rng.uniform(-0.8, 3.0, rank))


@pytest.mark.parametrize("ranks", [(3, 5), (0, 4), (6, 0), (0, 0)])
def test_refining_low_rank_metrics_in_their_span_is_exact(ranks):
    # The product of two low-rank metrics, refitted in the span of their bases, has exactly
    # the product's covariance when nothing is cut; with a cutoff it keeps the directions
    # that are off by more than the cutoff, so its whitened spectrum stays within it.
    rng = np.random.default_rng(sum(ranks))
    metric, correction = _random_metric(60, ranks[0], rng), _random_metric(60, ranks[1], rng)
    root = metric.root() @ correction.root()
    exact = root @ root.T
    refined = metric.refined(correction, 60, 1.0)
    assert refined.rank <= 2 * ranks[0] + ranks[1]
    np.testing.assert_allclose(refined.covariance(), exact, rtol=1e-8, atol=1e-10)
    cut = metric.refined(correction, 60, 2.0)
    eigenvalues = _whitened_eigenvalues(cut, exact)
    assert eigenvalues.min() > 0.5 - 1e-9 and eigenvalues.max() < 2.0 + 1e-9


SCALES = np.exp(np.linspace(-1.0, 1.0, 20))


@numba.njit
def _independent_gaussian(y, extra):
    grad = -y / extra**2
    return np.array(0.5 * np.sum(y * grad)), grad


gaussian_point = point_function(_independent_gaussian)


def test_whitened_variances_are_exact_for_a_gaussian_from_few_draws():
    # Along the covariance's eigen-directions the gradients of a Gaussian are the whitened
    # precision times the draws, so 10 draws give the metric's error exactly: 1 for the exact
    # metric, the true variance over the metric's for one built from a wrong covariance.
    rng = np.random.default_rng(5)
    basis, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    variances = np.array([30.0, 8.0, 3.0, 1.0, 1.0, 0.5, 0.1, 0.02])
    covariance = basis @ np.diag(variances) @ basis.T
    draws = rng.multivariate_normal(np.zeros(8), covariance, size=10)
    grads = -draws @ np.linalg.inv(covariance)
    exact = metric_from_covariance(covariance, cutoff=1.0)
    np.testing.assert_allclose(whitened_variances(exact, draws, grads), 1.0, rtol=1e-8)
    too_narrow = metric_from_covariance(covariance / 6.0, cutoff=1.0)
    np.testing.assert_allclose(whitened_variances(too_narrow, draws, grads), 6.0, rtol=1e-8)


def _first_window_rank(metric_covariance, draw_covariance, seed=6):
    """The rank cap a chain tuning a Gaussian of ``draw_covariance`` settles on after its
    first window, started from the metric of ``metric_covariance``."""
    dim = draw_covariance.shape[0]
    tuning = ChainTuning(dim, "low-rank", 0.8, 0.5, tune=1000)
    tuning.metric = tuning.initial_metric(metric_covariance)
    rng = np.random.default_rng(seed)
    precision = np.linalg.inv(draw_covariance)
    for iteration in range(25):
        x = rng.multivariate_normal(np.zeros(dim), draw_covariance)
        tuning.update(iteration, x, x, -precision @ x, 0.8)
    return tuning.curvature_holds, tuning.max_rank


def test_a_contradicted_curvature_caps_the_low_rank_directions():
    # 80 directions with variances spread over 1e-2..1e2: from the exact curvature the first
    # window confirms it and every direction stays correctable; from a curvature 6 times too
    # narrow (a hierarchy's mode understates its spread so) the cap applies.
    rng = np.random.default_rng(7)
    basis, _ = np.linalg.qr(rng.normal(size=(80, 80)))
    covariance = basis @ np.diag(np.exp(rng.uniform(-4.6, 4.6, 80))) @ basis.T
    assert _first_window_rank(covariance, covariance) == (True, 80)
    assert _first_window_rank(covariance / 6.0, covariance) == (False, CONTRADICTED_MAX_RANK)
    # A cap the user chose wins, and a dense or diagonal preconditioner is not capped.
    small = ChainTuning(CAPPED_MIN_DIM, "low-rank", 0.8, 0.5, tune=1000)
    small.curvature_holds = False  # directions cost little in few dimensions
    assert small.max_rank == CAPPED_MIN_DIM
    capped = ChainTuning(40, "low-rank", 0.8, 0.5, tune=1000, rank_cap=30)
    capped.curvature_holds = False
    assert capped.max_rank == 30
    dense = ChainTuning(40, "dense", 0.8, 0.5, tune=1000)
    dense.curvature_holds = False
    assert dense.max_rank == 40


def test_hmc_trajectory_samples_a_gaussian_exactly():
    # The kernel with a metric that does not whiten the target (unit scale against sds of
    # 0.37-2.7) and a step large enough to reject often: exact moments all the same.
    rng = np.random.default_rng(7)
    metric = Metric.identity(20)
    x = rng.standard_normal(20) * SCALES
    lp, grad = _independent_gaussian(x, SCALES)
    lp = float(lp)
    draws, accept = [], []
    for _ in range(6000):
        n_steps = int(rng.integers(1, 12))
        x, lp, grad, info = hmc_trajectory(
            gaussian_point, SCALES, metric, x, lp, grad, 0.35, n_steps, rng
        )
        draws.append(x)
        accept.append(info.acceptance_rate)
    draws = np.array(draws)[500:]
    assert 0.4 < np.mean(accept) < 0.95
    np.testing.assert_allclose(draws.std(axis=0) / SCALES, 1.0, atol=0.12)
    assert np.max(np.abs(draws.mean(axis=0) / SCALES)) < 0.15


def test_hmc_trajectory_is_unit_mass_hmc_in_the_whitened_coordinates():
    # The kernel runs in x with the inverse mass matrix R Rᵀ; it must make the moves of unit-
    # mass leapfrog in u = R⁻¹ x (momentum p_u, gradient Rᵀ ∇), step for step: the same
    # proposal, energy error and U-turn, for a low-rank metric that does not whiten the target.
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((20, 3)))[0]
    metric = Metric(SCALES * 0.7, basis, np.array([0.5, -0.3, 1.0]))
    x = np.random.default_rng(1).standard_normal(20) * SCALES
    lp, grad = _independent_gaussian(x, SCALES)
    eps = 0.3
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x_new, _, _, info = hmc_trajectory(
            gaussian_point, SCALES, metric, x, float(lp), grad, eps, 7, rng, extend_to=1024
        )
        rng = np.random.default_rng(seed)
        p = rng.standard_normal(20)
        log_uniform = np.log(rng.uniform())
        u0 = metric.to_whitened(x)
        u, g_u = u0.copy(), metric.gradient_to_whitened(grad)
        energy0 = 0.5 * p @ p - float(lp)
        uturn, proposal = -1, None
        for step in range(1, 1025):
            p = p + 0.5 * eps * g_u
            u = u + eps * p
            lp_u, g_x = _independent_gaussian(metric.to_density(u), SCALES)
            g_u = metric.gradient_to_whitened(g_x)
            p = p + 0.5 * eps * g_u
            if uturn < 0 and (u - u0) @ p < 0:
                uturn = step
            if step == 7:
                proposal = (u.copy(), p.copy(), float(lp_u))
            if step >= 7 and uturn > 0:
                break
        u7, p7, lp7 = proposal
        energy_error = 0.5 * p7 @ p7 - lp7 - energy0
        np.testing.assert_allclose(info.end_x, metric.to_density(u7), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(info.end_momentum, p7, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(info.energy_error, energy_error, rtol=1e-9, atol=1e-9)
        assert info.uturn == uturn and info.n_grad == max(7, uturn)
        accepted = log_uniform < -energy_error
        np.testing.assert_array_equal(x_new, info.end_x if accepted else x)


def test_the_trajectory_without_a_compiled_log_density_is_the_compiled_one():
    # The C backend (where Numba cannot compile a model) has no point function: the kernel
    # then runs the same leapfrog steps with array operations (before, DilationLangevin's
    # default kernel raised a TypeError there).
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((20, 3)))[0]
    metric = Metric(SCALES * 0.7, basis, np.array([0.5, -0.3, 1.0]))
    x = np.random.default_rng(1).standard_normal(20) * SCALES
    lp, grad = _independent_gaussian(x, SCALES)

    def logp_grad(point):
        value, gradient = _independent_gaussian(point, SCALES)
        return float(value), gradient

    for seed, (eps, n_steps, extend_to) in enumerate([(0.3, 7, 1024), (0.3, 5, 0), (9.0, 6, 0)]):
        compiled = hmc_trajectory(
            gaussian_point, SCALES, metric, x, float(lp), grad, eps, n_steps,
            np.random.default_rng(seed), extend_to,
        )  # fmt: skip
        arrays = hmc_trajectory(
            None, SCALES, metric, x, float(lp), grad, eps, n_steps,
            np.random.default_rng(seed), extend_to, logp_grad,
        )  # fmt: skip
        np.testing.assert_allclose(arrays[0], compiled[0], rtol=1e-9, atol=1e-9)
        assert arrays[1] == pytest.approx(compiled[1], rel=1e-9)
        info, expected = arrays[3], compiled[3]
        assert (info.diverging, info.n_grad, info.uturn) == (
            expected.diverging, expected.n_grad, expected.uturn,
        )  # fmt: skip
        assert info.acceptance_rate == pytest.approx(expected.acceptance_rate, rel=1e-9)
        np.testing.assert_allclose(info.end_momentum, expected.end_momentum, atol=1e-9)
    assert info.diverging  # the last step size blows up
    with pytest.raises(ValueError, match="logp_fn or logp_grad"):
        hmc_trajectory(None, SCALES, metric, x, float(lp), grad, 0.3, 3, np.random.default_rng(0))


def test_hmc_trajectory_reports_a_divergence_and_stays():
    rng = np.random.default_rng(8)
    metric = Metric.identity(20)
    x = np.ones(20)
    lp, grad = _independent_gaussian(x, SCALES)
    x_new, lp_new, _, info = hmc_trajectory(
        gaussian_point, SCALES, metric, x, float(lp), grad, 50.0, 10, rng
    )
    assert info.diverging and info.acceptance_rate == 0.0
    np.testing.assert_array_equal(x_new, x)
    assert lp_new == float(lp)


def test_trajectory_length_grows_from_too_short_on_a_gaussian():
    # ChEES on a whitened Gaussian: from T = 0.2 the adapted length reaches the range where
    # jittered trajectories decorrelate (about 1-4 for unit sds). Its criterion is nearly
    # flat at longer lengths, and some streams drift there (seeds 1 and 9 to 10-15 on one
    # machine and not on another: the 600 noisy Adam steps amplify rounding), so the test
    # asks it of most seeds.
    finals = [_chees_length_after_tuning(seed) for seed in range(7)]
    assert 1.0 < np.median(finals) < 5.0, finals
    assert sum(1.0 < final < 5.0 for final in finals) >= 5, finals


def _chees_length_after_tuning(seed: int) -> float:
    dim = 50
    scales = np.ones(dim)
    rng = np.random.default_rng(seed)
    metric = Metric.identity(dim)
    x = rng.standard_normal(dim)
    lp, grad = _independent_gaussian(x, scales)
    lp = float(lp)
    length = TrajectoryLength(0.2, 1024)
    step = DualAveraging(0.5, 0.8)
    for _ in range(600):
        eps, jitter = step.step_size, rng.uniform()
        start = x.copy()
        x, lp, grad, info = hmc_trajectory(
            gaussian_point, scales, metric, x, lp, grad, eps,
            length.n_steps(length.length, eps, jitter), rng,
        )  # fmt: skip
        step.update(info.acceptance_rate)
        length.update(
            start, info.end_x, info.end_momentum, np.zeros(dim), info.acceptance_rate, jitter, eps
        )
    return length.length_bar


def test_trajectory_measures_its_u_turn_without_changing_the_draw():
    # On a whitened 200-D Gaussian the trajectory turns back after half a period (pi), and
    # continuing it to measure that changes neither the proposal nor its acceptance.
    dim, eps = 200, 0.05
    scales = np.ones(dim)
    metric = Metric.identity(dim)
    x = np.random.default_rng(100).standard_normal(dim)
    lp, grad = _independent_gaussian(x, scales)
    turns = []
    for seed in range(5):
        plain = hmc_trajectory(
            gaussian_point, scales, metric, x, float(lp), grad, eps, 10, np.random.default_rng(seed)
        )
        measured = hmc_trajectory(
            gaussian_point, scales, metric, x, float(lp), grad, eps, 10,
            np.random.default_rng(seed), extend_to=1024,
        )  # fmt: skip
        np.testing.assert_array_equal(plain[0], measured[0])
        assert plain[3].acceptance_rate == measured[3].acceptance_rate
        assert plain[3].n_grad == 10 and measured[3].n_grad == measured[3].uturn
        turns.append(measured[3].uturn * eps)
    np.testing.assert_allclose(turns, np.pi, rtol=0.15)
    # Without the continuation a 10-step trajectory does not see the U-turn.
    assert plain[3].uturn == -1


def test_u_turn_lengths_come_from_the_latest_preconditioner():
    lengths = UTurnLengths(1.0, max_steps=1024, min_kept=4)
    assert list(lengths.lengths) == [1.0]
    for _ in range(3):
        lengths.add(10, 0.1)  # 1.0 whitened
    lengths.restart()
    for _ in range(5):
        lengths.add(30, 0.1)  # 3.0
    np.testing.assert_allclose(lengths.lengths, 3.0)
    lengths.restart()
    lengths.add(-1, 0.01)  # did not turn within 1024 steps: counts as 10.24
    lengths.add(20, 0.1)
    # Two lengths since the last change: the epoch before fills in up to min_kept.
    np.testing.assert_allclose(sorted(lengths.lengths), [2.0, 3, 3, 3, 3, 3, 10.24])
    lengths.freeze()
    lengths.restart()
    lengths.add(100, 1.0)
    assert len(lengths.lengths) == 7
    # Steps: ceil(h L / eps) with h uniform on [0.25, 1]: from 10 to 40, mean about 25.5.
    rng = np.random.default_rng(0)
    fixed = UTurnLengths(1.0, max_steps=1024)
    fixed.add(40, 0.1)
    steps = np.array([fixed.n_steps(0.1, rng)[0] for _ in range(4000)])
    assert 10 <= steps.min() <= 11 and steps.max() == 40  # 40 x 0.1 rounds up a little
    assert abs(steps.mean() - 25.5) < 0.5


def test_chain_tuning_windows_double_and_end_before_tuning_does():
    # Stan's windows: 25 iterations, then doubling, the last stretched to end 50 iterations
    # before tuning ends; at each end the metric is corrected from the window's draws and
    # gradients (here of a Gaussian with sds 3 the unit metric misses).
    tuning = ChainTuning(4, "low-rank", 0.8, 0.5, tune=1000)
    tuning.metric = Metric.identity(4)
    rng = np.random.default_rng(10)
    ends = []
    for iteration in range(1000):
        x = 3.0 * rng.standard_normal(4)
        if tuning.update(iteration, x, x, -x / 9.0, 0.8):
            ends.append(iteration + 1)
    assert ends == [25, 75, 175, 375, 950]
    np.testing.assert_allclose(np.diag(tuning.metric.covariance()), 9.0, rtol=0.15)
    tuning.freeze()
    assert tuning.step_size(tuning=False) == tuning.step.step_size_bar


def _tuned_target(divergent_iterations) -> float:
    """The step-size target after 1000 tuning iterations of a Gaussian, with trajectories
    diverging at ``divergent_iterations``."""
    tuning = ChainTuning(4, "low-rank", 0.8, 0.5, tune=1000)
    tuning.metric = Metric.identity(4)
    rng = np.random.default_rng(11)
    for iteration in range(1000):
        x = 3.0 * rng.standard_normal(4)
        tuning.update(iteration, x, x, -x / 9.0, 0.8, iteration in divergent_iterations)
    return tuning.target_accept


def test_divergences_after_the_second_window_raise_the_step_size_target():
    # Windows end at 25, 75, 175, 375 and 950. Divergences in the first two windows are the
    # first metrics' doing and change nothing; more than 1 % of a later window's
    # trajectories raise the target halfway to 1 for the rest of tuning, once per window.
    assert _tuned_target(set()) == 0.8
    assert _tuned_target(set(range(0, 75, 3))) == 0.8
    assert _tuned_target({100}) == 0.8  # 1 of 100: within the rate
    assert _tuned_target({100, 120}) == pytest.approx(0.9)
    assert _tuned_target({100, 120, 200, 220, 240}) == pytest.approx(0.95)
    assert _tuned_target(set(range(75, 1000, 10))) == pytest.approx(0.975)
    assert _tuned_target(set(range(75, 1000))) == pytest.approx(0.975)  # 3 windows from 75
