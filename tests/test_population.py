"""The population engine: exact kernels, weight and evidence estimates, the mode map, and
sample_dilation / sample_logdensity on posteriors whose answers are known."""

import warnings

import numpy as np
import pymc as pm
import pytest
import xarray as xr
from scipy.stats import ks_2samp

from benchmarks import families
from pymc_dilation import mode_table, plot_modes, sample_dilation, sample_logdensity
from pymc_dilation.diagnostics import UnreliableResultWarning
from pymc_dilation.engine import modes as modes_module
from pymc_dilation.engine.modes import ModeMap, add_modes, ascend, map_modes, merge_optima
from pymc_dilation.engine.population import PopulationTarget, refine
from pymc_dilation.engine.weights import (
    JUMP_TAIL,
    MixtureProposal,
    estimate_weights,
    independence_jump,
    mode_proposal,
)

MEANS = np.array([[-5.0, 0.0], [5.0, 0.0]])
WEIGHTS = np.array([0.2, 0.8])
LOG_Z = np.log(2 * np.pi)  # each unnormalised unit component integrates to 2π


def mixture_logp_grad(ys):
    """Unit-variance 2-D mixture, weights 0.2/0.8 at (-5, 0) and (5, 0), unnormalised."""
    diff = ys[:, None, :] - MEANS[None]
    comp = np.log(WEIGHTS) - 0.5 * (diff**2).sum(-1)
    top = comp.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(comp - top).sum(axis=1))
    resp = np.exp(comp - lse[:, None])
    return lse, -(resp[:, :, None] * diff).sum(axis=1)


def exact_draws(n, rng, weights=WEIGHTS):
    labels = (rng.uniform(size=n) < weights[1]).astype(int)
    return MEANS[labels] + rng.normal(size=(n, 2))


def right_share(samples):
    return float((samples[:, 0] > 0).mean())


# A proposal that is wrong on purpose: equal weights, widths 0.7 and 1.6, shifted centers.
WRONG = MixtureProposal(
    MEANS + [[0.5, 0.3], [-0.4, 0.2]], np.array([0.7 * np.eye(2), 1.6 * np.eye(2)]), np.ones(2) / 2
)


# The same, as the jumps propose: no defensive part, each Gaussian truncated to its central
# 1 - JUMP_TAIL region (q = 0 beyond, where the target still has mass).
WRONG_TRUNCATED = MixtureProposal(WRONG.locations, WRONG.roots, WRONG.alphas, 0.0, JUMP_TAIL)


@pytest.mark.parametrize("proposal", [WRONG, WRONG_TRUNCATED], ids=["defensive", "truncated"])
def test_independence_jump_leaves_the_target_invariant_whatever_the_proposal(proposal):
    rng = np.random.default_rng(1)
    ys = exact_draws(6000, rng)
    lps, grads = mixture_logp_grad(ys)
    for _ in range(30):
        independence_jump(mixture_logp_grad, proposal, ys, lps, grads, rng)
    assert abs(right_share(ys) - 0.8) < 0.02
    right = ys[ys[:, 0] > 0]
    np.testing.assert_allclose(right.mean(axis=0), MEANS[1], atol=0.06)
    np.testing.assert_allclose(right.std(axis=0), 1.0, atol=0.05)


def test_a_truncated_jump_proposal_is_normalised_and_proposes_only_inside_its_regions():
    grid = np.linspace(-14.0, 14.0, 1401)
    xx, yy = np.meshgrid(grid, grid)
    points = np.column_stack([xx.ravel(), yy.ravel()])
    density = np.exp(WRONG_TRUNCATED.log_density(points))
    cell = (grid[1] - grid[0]) ** 2
    # The grid's cells straddle the truncation circles: the sum is within 0.2 % of one.
    assert abs(density.sum() * cell - 1.0) < 2e-3
    draws = WRONG_TRUNCATED.draw(np.random.default_rng(0), 20000)
    inside = np.isfinite(WRONG_TRUNCATED.log_density(draws))
    assert inside.all()
    # Beyond every region q is 0 (the untruncated mixture is not).
    far = np.array([[0.0, 6.0]])
    assert WRONG_TRUNCATED.log_density(far)[0] == -np.inf
    assert np.isfinite(WRONG.log_density(far)[0])


@pytest.mark.parametrize("proposal", [WRONG, WRONG_TRUNCATED], ids=["defensive", "truncated"])
def test_one_point_at_a_time_the_proposal_is_the_batched_one(proposal):
    # The chain's jumps evaluate q and draw from it one point at a time (compiled).
    rng = np.random.default_rng(4)
    points = 2.0 * proposal.draw(rng, 400)
    batched = proposal.log_density(points)
    single = np.array([proposal.point_log_density(x) for x in points])
    assert np.isinf(batched).any() == (proposal is WRONG_TRUNCATED)
    np.testing.assert_array_equal(np.isinf(single), np.isinf(batched))
    np.testing.assert_allclose(single[np.isfinite(single)], batched[np.isfinite(batched)])
    nearest = [proposal.point_nearest_mode(x) for x in points]
    np.testing.assert_array_equal(nearest, proposal.nearest_mode(points))
    draws = np.array([proposal.draw_point(rng) for _ in range(40000)])
    reference = proposal.draw(rng, 40000)
    for i in range(2):
        assert ks_2samp(draws[:, i], reference[:, i]).pvalue > 0.01
    shares = np.bincount(proposal.nearest_mode(draws), minlength=2) / len(draws)
    reference_shares = np.bincount(proposal.nearest_mode(reference), minlength=2) / len(draws)
    np.testing.assert_allclose(shares, reference_shares, atol=0.015)
    assert np.isfinite(proposal.log_density(draws)).all()


def test_independence_jumps_move_mass_to_the_right_weights():
    rng = np.random.default_rng(2)
    ys = exact_draws(4000, rng, weights=np.array([0.9, 0.1]))  # wrong occupancy
    lps, grads = mixture_logp_grad(ys)
    for _ in range(25):
        independence_jump(mixture_logp_grad, WRONG, ys, lps, grads, rng)
    assert abs(right_share(ys) - 0.8) < 0.03


def test_refinement_sweeps_leave_the_target_invariant():
    rng = np.random.default_rng(3)
    ys = exact_draws(4000, rng)
    lps, grads = mixture_logp_grad(ys)
    target = PopulationTarget(2, mixture_logp_grad)
    refine(target, ys, lps, grads, WRONG, rng, 0.5, 0.6, sweeps=30, steps=3)
    assert abs(right_share(ys) - 0.8) < 0.02
    np.testing.assert_allclose(ys[ys[:, 0] > 0].std(axis=0), 1.0, atol=0.05)


def test_weight_and_evidence_errors_shrink_as_draws_grow():
    def errors(n_draws):
        w_err, z_err, calibrated = [], [], []
        for seed in range(12):
            estimate, _ = estimate_weights(
                mixture_logp_grad, WRONG, n_draws, np.random.default_rng(seed)
            )
            w_err.append(abs(estimate.weights[1] - 0.8))
            z_err.append(abs(estimate.log_evidence - LOG_Z))
            calibrated.append(z_err[-1] < 4 * estimate.log_evidence_se + 1e-3)
        return np.mean(w_err), np.mean(z_err), np.mean(calibrated)

    w_small, z_small, _ = errors(200)
    w_large, z_large, calibrated = errors(6400)
    assert w_large < w_small / 3 and z_large < z_small / 3  # 1/sqrt(32) = 0.18
    assert w_large < 0.01 and z_large < 0.02
    assert calibrated >= 0.9


def test_hill_valley_merging_keeps_modes_apart_and_joins_a_basin():
    rng = np.random.default_rng(4)
    # points scattered in both basins, not at the optima: they still join their own mode
    points = exact_draws(200, rng)
    lps = mixture_logp_grad(points)[0]
    heads, labels, _ = merge_optima(mixture_logp_grad, points, lps)
    assert len(heads) == 2
    for k in range(2):
        sides = points[labels == k, 0] > 0
        assert sides.all() or not sides.any()


def _count_polish_rows(monkeypatch) -> list[int]:
    """The rows of each Newton polish the mode map asks for, from now on."""
    polished: list[int] = []
    polish = modes_module.newton_polish

    def counting_polish(logp_grad, starts, *args, **kwargs):
        polished.append(len(starts))
        return polish(logp_grad, starts, *args, **kwargs)

    monkeypatch.setattr(modes_module, "newton_polish", counting_polish)
    return polished


def test_points_that_climb_to_known_modes_add_nothing_and_polish_nothing(monkeypatch):
    rng = np.random.default_rng(5)
    points = exact_draws(400, rng)
    known = map_modes(mixture_logp_grad, points, *mixture_logp_grad(points))
    assert known.n_modes == 2
    polished = _count_polish_rows(monkeypatch)
    near = exact_draws(20, rng)  # in both modes' bulks
    same, _ = add_modes(mixture_logp_grad, known, near, *mixture_logp_grad(near), widen=True)
    assert same is known and polished == []

    # A point in a third bump the map lacks: mapped (polished) and added.
    def three_bumps(ys):
        lp, grad = mixture_logp_grad(ys)
        bump = np.log(0.3) - 0.5 * ((ys - [0.0, 9.0]) ** 2).sum(axis=1)
        top = np.maximum(lp, bump)
        total = top + np.log(np.exp(lp - top) + np.exp(bump - top))
        share = np.exp(bump - total)[:, None]
        return total, (1 - share) * grad + share * ([0.0, 9.0] - ys)

    far = np.array([[0.3, 8.5]])
    grown, _ = add_modes(three_bumps, known, far, *three_bumps(far), widen=True)

    assert grown.n_modes == 3 and polished != []
    np.testing.assert_allclose(grown.locations[-1], [0.0, 9.0], atol=0.05)


def test_a_known_optimum_is_not_polished_again_and_the_map_is_the_same(monkeypatch):
    # The chain's tuning population knows the optimum its Laplace approximation polished:
    # particles that climb to it take that optimum and curvature; a mode it does not hold
    # (the other bump, or a wrong "known" point off every optimum) is polished as before.
    rng = np.random.default_rng(6)
    points = exact_draws(60, rng)
    lps, grads = mixture_logp_grad(points)
    plain = map_modes(mixture_logp_grad, points, lps, grads)
    polished = _count_polish_rows(monkeypatch)
    heavy = plain.locations[np.argmax(plain.logp)]
    known = modes_module.known_optimum(mixture_logp_grad, heavy, np.eye(2))
    mapped = map_modes(mixture_logp_grad, points, lps, grads, known=known)
    assert polished == [1]  # the light mode only
    assert mapped.n_modes == 2
    np.testing.assert_allclose(mapped.locations, plain.locations, atol=1e-6)
    np.testing.assert_allclose(mapped.roots, plain.roots, atol=1e-3)
    np.testing.assert_array_equal(mapped.labels, plain.labels)

    polished.clear()
    off = modes_module.known_optimum(mixture_logp_grad, heavy + [0.0, 3.0], np.eye(2))
    mapped = map_modes(mixture_logp_grad, points, lps, grads, known=off)
    assert polished == [2]  # 4.5 nats below the heavy optimum: not taken for it
    np.testing.assert_allclose(mapped.locations, plain.locations, atol=1e-6)


def test_mode_map_of_a_unimodal_correlated_gaussian_has_one_mode():
    cov = np.array([[1.0, 0.95], [0.95, 1.0]]) * 4.0
    precision = np.linalg.inv(cov)

    def gaussian(xs):
        return -0.5 * np.einsum("ni,ij,nj->n", xs, precision, xs), -xs @ precision

    ys = np.random.default_rng(5).multivariate_normal([0, 0], cov * 9, size=500)
    modes = map_modes(gaussian, ys, *gaussian(ys))
    assert modes.n_modes == 1
    np.testing.assert_allclose(modes.locations[0], 0.0, atol=1e-4)


def test_points_on_a_ridge_are_no_modes():
    # Of the four optima kept (places 0, 1, 3, 4), places 3 and 4 stopped on a ridge (towards
    # tau -> infinity in non-centered eight schools, see RIDGE_DECREMENT): their particles
    # join the highest mode left, the others keep their modes.
    from pymc_dilation.engine.modes import _without_ridges

    kept = np.array([0, 1, 3, 4])  # places kept after the second merge
    labels = np.array([0, 1, 2, 3, 3, 1, 0])  # particles' modes, numbered as kept
    place_lp = np.array([-5.0, -1.0, -9.0, -40.0, -45.0])
    ridge = np.array([False, False, False, True, True])
    left, relabelled = _without_ridges(kept, labels, place_lp, ridge, 2)
    np.testing.assert_array_equal(left, [0, 1])
    np.testing.assert_array_equal(relabelled, [0, 1, 1, 1, 1, 1, 0])  # 1 is the highest
    # When every optimum is on a ridge, those within the bulk depth of the highest stay
    # (bulk_depth(2) = 10.7 nats: places 0 and 1, not 3 and 4).
    everything = np.ones(5, dtype=bool)
    left, relabelled = _without_ridges(kept, labels, place_lp, everything, 2)
    np.testing.assert_array_equal(left, [0, 1])
    np.testing.assert_array_equal(relabelled, [0, 1, 1, 1, 1, 1, 0])
    # ... and in 100 dimensions (bulk depth 83 nats) every one of them does.
    left, same = _without_ridges(kept, labels, place_lp, everything, 100)
    np.testing.assert_array_equal(left, kept)
    np.testing.assert_array_equal(same, labels)


def test_ascents_stop_where_a_step_gains_almost_nothing():
    def unit_gaussian(xs):
        return -0.5 * np.sum(xs**2, axis=1), -xs

    evaluated = []

    def counted(xs):
        evaluated.append(len(xs))
        return unit_gaussian(xs)

    ys = 3.0 * np.random.default_rng(6).standard_normal((128, 5))
    optima, lps, per_row, climbing = ascend(counted, ys, *unit_gaussian(ys), n_iter=20)
    # every row ends near the optimum (a step from 0.15 sd gains less than ASCENT_TOL)...
    assert np.all(-lps < 0.05)
    # ...and stops there: far fewer rows are evaluated than 20 per row
    assert sum(evaluated) < 0.5 * 20 * len(ys)
    assert per_row == -(-sum(evaluated) // len(ys))
    assert not climbing.any()


def test_a_row_budget_lets_slow_ascents_finish_at_the_cost_of_an_iteration_cap():
    # The check's ascents (population._check_from_annealed_starts): on a 150-D two-mode
    # mixture 28 of 32 ended in the wide mode within 40 iterations and the 4 that ascended
    # into the narrow one needed 60-150; cut at 40 iterations, one chain in four missed it.
    def banana(xs):
        x, y = xs[:, 0], xs[:, 1]
        lp = -((1 - x) ** 2) - 10.0 * (y - x**2) ** 2
        grad = np.stack([2 * (1 - x) + 40.0 * x * (y - x**2), -20.0 * (y - x**2)], axis=1)
        return lp, grad

    evaluated = []

    def counted(xs):
        evaluated.append(len(xs))
        return banana(xs)

    rng = np.random.default_rng(1)
    ys = np.vstack([1.0 + 0.05 * rng.standard_normal((30, 2)), [[-1.5, 2.0], [-1.2, 1.6]]])
    capped = ascend(counted, ys, *banana(ys), n_iter=10)
    assert capped.climbing[-2:].all() and np.all(capped.lps[-2:] < -4.0)
    rows_capped = sum(evaluated)
    evaluated.clear()
    budget = ascend(counted, ys, *banana(ys), n_iter=200, max_rows=10 * len(ys))
    assert not budget.climbing.any() and np.all(budget.lps > -0.01)
    assert rows_capped <= sum(evaluated) <= 10 * len(ys)
    # the budget binds: a smaller one stops the slow rows on their way
    evaluated.clear()
    short = ascend(counted, ys, *banana(ys), n_iter=200, max_rows=4 * len(ys))
    assert short.climbing[-2:].all() and sum(evaluated) < 4 * len(ys) + len(ys)


def test_mode_map_of_the_mixture_finds_both_modes_and_their_gaussians():
    ys = exact_draws(1000, np.random.default_rng(6))
    modes = map_modes(mixture_logp_grad, ys, *mixture_logp_grad(ys))
    assert modes.n_modes == 2
    order = np.argsort(modes.locations[:, 0])
    np.testing.assert_allclose(modes.locations[order], MEANS, atol=1e-3)
    covariances = modes.roots @ np.swapaxes(modes.roots, 1, 2)
    np.testing.assert_allclose(covariances, np.broadcast_to(np.eye(2), (2, 2, 2)), atol=0.2)
    proposal = mode_proposal(modes, np.array([0.5, 0.5]), 0.1)
    assert isinstance(proposal, MixtureProposal) and isinstance(modes, ModeMap)


def test_sample_logdensity_finds_modes_on_both_sides_of_the_start_with_weights_and_evidence():
    # Both modes far to the right of the start (the origin), widths 0.5 and 2 (4x apart),
    # weights 0.3 / 0.7 before the N(0, 10^2) prior.
    means, sds, w = np.array([[8.0, 3.0], [15.0, -4.0]]), np.array([0.5, 2.0]), np.array([0.3, 0.7])
    prior_sd = 10.0

    def logp_grad(xs):
        diff = xs[:, None, :] - means[None]
        comp = np.log(w) - np.log(2 * np.pi * sds**2) - 0.5 * (diff**2).sum(-1) / sds**2
        top = comp.max(axis=1, keepdims=True)
        resp = np.exp(comp - top)
        norm = resp.sum(axis=1, keepdims=True)
        prior = -0.5 * (xs**2).sum(1) / prior_sd**2 - np.log(2 * np.pi * prior_sd**2)
        grad = -((resp / norm / sds**2)[:, :, None] * diff).sum(1) - xs / prior_sd**2
        return (top + np.log(norm))[:, 0] + prior, grad

    var = prior_sd**2 + sds**2
    mass = w * np.exp(-0.5 * (means**2).sum(1) / var) / (2 * np.pi * var)
    result = sample_logdensity(logp_grad, 2, draws=2000, random_seed=7)
    share_narrow = float((np.linalg.norm(result.samples - means[0], axis=1) < 3.0).mean())
    assert abs(share_narrow - mass[0] / mass.sum()) < 0.03
    assert abs(result.log_marginal_likelihood[0] - np.log(mass.sum())) < 0.1
    table = mode_table(result)
    assert len(table) == 2 and abs(table["weight"].sum() - 1.0) < 1e-9


def test_same_seed_same_samples():
    runs = [
        sample_logdensity(mixture_logp_grad, 2, draws=200, random_seed=5, n_levels=10).samples
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*runs)


def _no_sampler_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, UnreliableResultWarning)]


def test_sample_dilation_on_a_pymc_model(conjugate_normal, draws_of):
    model, mean, sd = conjugate_normal
    with model, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idata = sample_dilation(draws=1500, chains=2, random_seed=3, progressbar=False)
        reference = pm.sample(draws=10, tune=10, chains=1, progressbar=False)
    assert not _no_sampler_warnings(caught)
    assert type(idata) is type(reference)
    assert np.asarray(idata.posterior["mu"]).shape == (2, 1500)
    draws = draws_of(idata, "mu")
    assert abs(draws.mean() - mean) < 0.1 * sd
    assert abs(draws.std() / sd - 1) < 0.1
    stats = idata.sample_stats
    for name in ("dilation", "step_size", "acceptance_rate", "divergences", "lp", "mode_index"):
        assert name in stats
    assert stats.attrs["n_grad"] > 0 and stats.attrs["sampling_time"] > 0
    assert stats.attrs["n_modes_found"] == [1, 1]


def test_log_marginal_likelihood_of_a_conjugate_normal_model():
    rng = np.random.default_rng(0)
    y = rng.normal(1.0, 2.0, size=15)
    prior_mu, prior_sd, noise_sd = 0.5, 3.0, 2.0
    cov = noise_sd**2 * np.eye(len(y)) + prior_sd**2
    diff = y - prior_mu
    exact = -0.5 * (
        len(y) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + diff @ np.linalg.solve(cov, diff)
    )
    with pm.Model():
        mu = pm.Normal("mu", prior_mu, prior_sd)
        pm.Normal("y", mu, noise_sd, observed=y)
        idata = sample_dilation(draws=1000, chains=2, random_seed=1, progressbar=False)
    lml = idata.sample_stats["log_marginal_likelihood"]
    assert lml.dims == ("chain",)
    se = np.asarray(lml.attrs["standard_error"])
    assert np.all(np.abs(np.asarray(lml) - exact) < np.maximum(4 * se, 0.02))
    assert np.all(np.abs(np.asarray(lml) - exact) < 0.1)


def test_flat_prior_bimodal_model_with_the_start_outside_both_modes(draws_of):
    # x ~ Flat, 0.5 N(4, 1) + 0.5 N(10, 1): pm.sample_smc cannot start, the initial point is 0
    with families.build_model("flat_bimodal"):
        idata = sample_dilation(draws=2000, random_seed=2, progressbar=False)
    assert abs(float((draws_of(idata, "x") > 7).mean()) - 0.5) < 0.04
    assert abs(float(idata.sample_stats["log_marginal_likelihood"][0])) < 0.1  # Z = 1


def test_sign_ambiguous_regression_weighs_both_signs(draws_of):
    rng = np.random.default_rng(11)
    x = rng.normal(size=40)
    y = 1.3 * x + rng.normal(size=40)
    with pm.Model():
        b = pm.Normal("b", 0.3, 2.0)
        pm.Normal("y", pm.math.abs(b) * x, 1.0, observed=y)
        idata = sample_dilation(draws=2000, random_seed=3, progressbar=False)
    grid = np.linspace(-6, 6, 24001)
    logp = -0.5 * ((grid - 0.3) / 2) ** 2 - 0.5 * ((y - np.abs(grid)[:, None] * x) ** 2).sum(1)
    p = np.exp(logp - logp.max())
    exact = p[grid > 0].sum() / p.sum()
    assert abs(float((draws_of(idata, "b") > 0).mean()) - exact) < 0.035
    table = mode_table(idata)
    assert len(table) == 2
    assert abs(table.loc[0, "weight"].max() - max(exact, 1 - exact)) < 0.035


def test_mode_table_and_plot(draws_of):
    with pm.Model():
        x = pm.Normal("x", 0.0, 10.0, shape=2)
        pm.Potential(
            "mixture",
            pm.math.logsumexp(
                pm.math.stack(
                    [
                        np.log(w) - 0.5 * pm.math.sum((x - m) ** 2)
                        for w, m in zip(WEIGHTS, MEANS + [3.0, 4.0])
                    ]
                )
            ),
        )
        idata = sample_dilation(draws=1000, chains=2, random_seed=4, progressbar=False)
    table = mode_table(idata)
    assert list(table.index.names) == ["chain", "mode"] and len(table) == 4
    assert {"weight", "weight_se", "particles", "share", "log_density", "x[0]", "x[1]"} <= set(
        table.columns
    )
    means = MEANS + [3.0, 4.0]
    mass = WEIGHTS * np.exp(-0.5 * (means**2).sum(1) / 101.0)  # the N(0, 10^2) prior's share
    top = table.loc[0].iloc[0]
    assert abs(top["weight"] - mass[1] / mass.sum()) < 0.03
    assert abs(top["x[0]"] - 8.0 * 100 / 101) < 0.05
    assert len(mode_table(idata, chain=1)) == 2
    # A table for a model with hundreds of parameters keeps the columns where the modes differ.
    assert list(mode_table(idata, location_columns=1).columns)[-1] == "x[0]"
    assert len(mode_table(idata, location_columns=None).columns) == 7
    figure = plot_modes(idata)
    assert figure.axes
    with pytest.raises(ValueError, match="chain"):
        mode_table(idata, chain=5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"draws": 0}, "draws"),
        ({"target_accept": 2.0}, "target_accept"),
        ({"schedule": [0.5, 0.2, 1.0]}, "increasing"),
        ({"refine_sweeps": -1}, "refine_sweeps"),
        ({"anneal_metropolis": "no"}, "anneal_metropolis"),
        ({"random_seed": "abc"}, "random_seed"),
        ({"center": "middle"}, "center"),
    ],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_logdensity(mixture_logp_grad, 2, **kwargs)


def test_discrete_models_are_refused_with_a_reason():
    with pm.Model():
        pm.Poisson("n", 2.0)
        pm.Normal("x", 0.0, 1.0)
        with pytest.raises(ValueError, match="discrete"):
            sample_dilation(draws=10, progressbar=False)


def test_center_by_name_in_constrained_space_and_unknown_names():
    with pm.Model():
        pm.HalfNormal("sigma", 1.0)
        pm.Normal("mu", 0.0, 1.0)
        with pytest.raises(ValueError, match="nonexistent"):
            sample_dilation(draws=50, center={"nonexistent": 1.0}, progressbar=False)
        idata = sample_dilation(draws=200, center={"sigma": 2.0}, random_seed=1, progressbar=False)
    assert np.all(np.asarray(idata.posterior["sigma"]) > 0)


def test_a_funnel_as_written_is_warned_about():
    # Neal's funnel sampled as written: no Gaussian describes it, and the bridges from the
    # neck's Gaussian do not reach the mouth (by default it is non-centered, see
    # test_reparam). Warned by the population's checks or by bridges that still disagree
    # on the evidence. A warning on the rise of the evidence from the first bridge to the
    # last (5 nats) caught PyMC 5's case but cried wolf on a 2-parameter prior sampled from a
    # shared center (first bridge 38-41 nats low, the next two right): withdrawn. Since the
    # first bridge is a pilot of a quarter of the particles, seeds 1-4 on PyMC 5.28 and 6.4
    # are all warned (v 2.0-2.6 sd low; 0.7-1.6 before, when PyMC 5's seed 1 was quiet).
    with pm.Model():
        log_scale = pm.Normal("log_scale", 0.0, 3.0)
        pm.Normal("x", 0.0, pm.math.exp(log_scale / 2), shape=8)
        with pytest.warns(UnreliableResultWarning, match="did not converge|bridges .* disagree on"):
            sample_dilation(draws=1000, random_seed=1, progressbar=False, reparameterize=False)


def test_a_correlated_regression_with_flat_priors_is_not_warned_about(draws_of):
    rng = np.random.default_rng(8)
    base = rng.normal(size=(60, 1))
    X = base + 0.05 * rng.normal(size=(60, 4))  # strongly collinear predictors
    beta = np.array([1.0, -0.5, 0.3, 0.8])
    y = X @ beta + rng.normal(0.0, 0.5, size=60)
    with pm.Model(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = pm.Flat("b", shape=4)
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", X @ b, sigma, observed=y)
        idata = sample_dilation(draws=1500, chains=2, random_seed=9, progressbar=False)
    assert not _no_sampler_warnings(caught)
    design = np.linalg.lstsq(X, y, rcond=None)[0]
    b_draws = np.asarray(idata.posterior["b"]).reshape(-1, 4)
    sd = b_draws.std(axis=0)
    assert np.all(np.abs(b_draws.mean(axis=0) - design) < 0.15 * sd)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda xs: (mixture_logp_grad(xs)[0][:, None], mixture_logp_grad(xs)[1]), r"\(1, 1\)"),
        (lambda xs: (mixture_logp_grad(xs)[0], mixture_logp_grad(xs)[1][:, :1]), r"\(1, 1\)"),
        (lambda xs: float(mixture_logp_grad(xs)[0][0]), "pair"),
    ],
)
def test_log_density_of_the_wrong_shape_is_refused_up_front(bad, match):
    with pytest.raises(ValueError, match=match):
        sample_logdensity(bad, 2, draws=50)


def _many_modes_logp_grad(ys):
    """Twelve unit modes on a circle of radius 12 with equal weights, unnormalised."""
    angles = np.arange(12) * 2 * np.pi / 12
    means = 12.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    diff = ys[:, None, :] - means[None]
    comp = -0.5 * (diff**2).sum(-1)
    top = comp.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(comp - top).sum(axis=1))
    resp = np.exp(comp - lse[:, None])
    return lse, -(resp[:, :, None] * diff).sum(axis=1)


def test_a_map_of_many_modes_is_weighed_with_enough_draws_for_each():
    from pymc_dilation.engine.explore import AnnealState
    from pymc_dilation.engine.population import DRAWS_PER_MODE, _weigh

    # 24 particles on twelve equal modes, two each: weighed with one draw per particle, the
    # weights' errors were of the order of the weights themselves
    angles = np.arange(12) * 2 * np.pi / 12
    means = 12.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    errors = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        ys = np.repeat(means, 2, axis=0) + 0.5 * rng.standard_normal((24, 2))
        lps, grads = _many_modes_logp_grad(ys)
        modes = map_modes(_many_modes_logp_grad, ys, lps, grads)
        assert modes.n_modes == 12
        state = AnnealState(ys, lps, grads, np.full(24, 0.5), 1)
        mapped = _weigh(PopulationTarget(2, _many_modes_logp_grad), state, modes, rng)
        assert mapped.resampled and len(mapped.start) == 24
        assert len(mapped.estimate.log_importance_weights) >= DRAWS_PER_MODE * 12
        errors.append(np.abs(mapped.estimate.weights - 1 / 12).max())
    assert max(errors) < 0.04


@pytest.mark.parametrize(
    "logp_grad, modes, particles",
    [
        (lambda ys: (-0.5 * (ys**2).sum(1), -ys), 1, {32}),  # unimodal: the first batch only
        (mixture_logp_grad, 2, {64}),  # one doubling, which finds nothing new
        (_many_modes_logp_grad, 12, {128, 256, 512}),  # grows while it finds modes
    ],
)
def test_growing_population_grows_only_while_it_finds_modes(logp_grad, modes, particles):
    from pymc_dilation.engine.population import map_growing_population
    from pymc_dilation.engine.schedules import make_schedule

    rng = np.random.default_rng(7)
    mapped = map_growing_population(
        PopulationTarget(2, logp_grad), lambda n: rng.normal(scale=15.0, size=(n, 2)),
        make_schedule("geometric", 10, 1e-3), rng, first=32, most=512,
    )  # fmt: skip
    assert mapped.modes.n_modes == modes
    assert len(mapped.start) in particles


@pytest.mark.parametrize(
    "logp_grad, modes, annealed",
    [
        (lambda ys: (-0.5 * (ys**2).sum(1), -ys), 1, False),  # one mode: nothing annealed
        (mixture_logp_grad, 2, True),  # the ascents find two: the annealing runs as before
    ],
)
def test_probe_skips_the_annealing_only_when_the_ascents_find_one_mode(logp_grad, modes, annealed):
    from pymc_dilation.engine.population import map_growing_population
    from pymc_dilation.engine.schedules import make_schedule

    levels = make_schedule("geometric", 10, 1e-3)
    runs = {}
    for probe in (False, True):
        rng = np.random.default_rng(7)
        runs[probe] = map_growing_population(
            PopulationTarget(2, logp_grad), lambda n, rng=rng: rng.normal(scale=15.0, size=(n, 2)),
            levels, rng, first=32, most=512, probe=probe,
        )  # fmt: skip
    assert runs[True].modes.n_modes == runs[False].modes.n_modes == modes
    assert runs[True].probed != annealed
    # The annealing costs 4 steps a level per particle; the probe far less (in 2-D there is
    # no check from annealed starts: see CHECK_MIN_DIM).
    assert (runs[True].n_grad >= 4 * len(levels)) == annealed
    assert runs[False].n_grad >= 4 * len(levels)


FAR_MEANS = np.array([-5.0, 5.0, 30.0])
FAR_WEIGHTS = np.array([0.35, 0.35, 0.3])


def _far_mode_logp_grad(xs):
    """1-D unit mixture: modes at -5 and 5, and one of weight 0.3 at 30 whose basin (x above
    about 17.5) holds 4 % of the centers' law N(0, 10²)."""
    diff = xs - FAR_MEANS[None]
    comp = np.log(FAR_WEIGHTS) - 0.5 * diff**2
    top = comp.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(comp - top).sum(axis=1))
    resp = np.exp(comp - lse[:, None])
    return lse, -(resp * diff).sum(axis=1, keepdims=True)


def test_more_climbs_find_a_heavy_mode_whose_basin_few_centers_reach():
    from pymc_dilation.engine.population import map_growing_population
    from pymc_dilation.engine.schedules import make_schedule

    rng = np.random.default_rng(1)  # without the climbs, this population misses the far mode
    mapped = map_growing_population(
        PopulationTarget(1, _far_mode_logp_grad), lambda n: 10.0 * rng.standard_normal((n, 1)),
        make_schedule("geometric", 10, 1e-3), rng, first=16, most=512, probe=True,
    )  # fmt: skip
    far = np.abs(mapped.modes.locations[:, 0] - 30.0) < 1e-3
    assert far.sum() == 1
    weight, se = mapped.estimate.weights[far][0], mapped.estimate.weights_se[far][0]
    assert se < 0.08 and abs(weight - 0.3) < 3 * se


def test_more_climbs_stop_after_a_batch_that_adds_no_mode_of_mass():
    from pymc_dilation.engine.population import _climb_more, _probe

    target = PopulationTarget(2, mixture_logp_grad)
    rng = np.random.default_rng(2)
    probed, one_mode = _probe(target, exact_draws(64, rng, np.array([0.5, 0.5])), rng)
    assert not one_mode and probed.modes.n_modes == 2
    batches = []

    def draw(n):
        batches.append(n)
        return 3.0 * rng.standard_normal((n, 2))

    climbed, spent = _climb_more(target, probed.modes, draw, 64, 1024)
    assert climbed.n_modes == 2
    assert batches == [64]
    assert 0 < spent <= 40 * 64  # an ascent and its merging; an annealed path costs 80


def _funnel_logp_grad(xs):
    """Neal's funnel: v ~ N(0, 3), x_i ~ N(0, exp(v / 2)), i = 1..8."""
    v, x = xs[:, 0], xs[:, 1:]
    scale = np.exp(-v)
    lp = -(v**2) / 18 - 0.5 * (x**2).sum(axis=1) * scale - 0.5 * x.shape[1] * v
    grad_v = -v / 9 + 0.5 * (x**2).sum(axis=1) * scale - 0.5 * x.shape[1]
    return lp, np.column_stack([grad_v, -x * scale[:, None]])


def _banana_logp_grad(xs):
    """x0 ~ N(0, 2), x1 - 0.5 (x0² - 4) ~ N(0, 1): a curved, non-Gaussian density."""
    x0, bend = xs[:, 0], xs[:, 1] - 0.5 * (xs[:, 0] ** 2 - 4.0)
    lp = -(x0**2) / 8 - 0.5 * bend**2
    return lp, np.column_stack([-x0 / 4 + bend * x0, -bend])


def _convergence_warnings(caught):
    return [m for m in _no_sampler_warnings(caught) if "did not converge" in m]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_funnel_population_is_warned(seed):
    # Every ascent ends in the neck (v about -36, where x's scale is 1.5e-8), and that
    # Gaussian's importance weights have Pareto k-hat 0.77-1.15, so the particles are carried
    # from it to the funnel by bridges (engine.tempering), each from the moments of the last
    # one's particles. Their Hamiltonian moves, whose step fits the neck, do not reach the
    # mouth: v ends 0.7 (seed 1) to 1.25 sd (seed 3) low, and the four bridges' log Z still
    # moved by 4-100 nats from one to the next, which is warned. Seed 3's refinement also
    # never passed its checks with the stop test's margin (settled_sweep -1). (With one
    # bridge v ended 1.7-8 sd low; before the bridge the particles collapsed into the neck.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sample_logdensity(_funnel_logp_grad, 9, draws=1000, random_seed=seed)
    messages = [str(w.message) for w in caught if w.category is UnreliableResultWarning]
    assert any("bridges" in m and "disagree on log_marginal_likelihood" in m for m in messages)
    v = result.samples[:, 0]
    assert v.mean() < -0.5 * 3.0  # the miss the warnings are about (v ~ N(0, 3))
    assert float(result.stage_stats["bridge_evidence_change"][0]) > 0.5
    assert result.stage_stats.attrs["n_tempering_levels"] > 0


def _rotated_log_gamma(dim: int, seed: int):
    """Independent log-gamma coordinates ``y_i`` (shapes 0.2-0.6: skewed, the Laplace
    approximation at the mode about half their sd), rotated: ``x = Q y``; ``log Z`` exact."""
    from scipy.special import gammaln

    rng = np.random.default_rng([dim, seed])
    shapes = rng.uniform(0.2, 0.6, dim)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]

    def logp_grad(xs):
        ys = xs @ rotation
        e = np.exp(np.clip(ys, -700, 700))
        return (ys * shapes - e).sum(axis=1), (shapes - e) @ rotation.T

    return logp_grad, float(gammaln(shapes).sum())


def test_successive_bridges_get_the_evidence_of_a_skewed_density():
    # Pareto k-hat of the map's Gaussian is above 0.7 here, so the particles are bridged to
    # the target. One bridge from the Laplace Gaussian lags along the long tails: its log Z
    # was 0.04-1.53 nats off over these seeds (mean 0.67, five of eight beyond 0.5); the
    # bridges from the previous one's moments until two agree: mean 0.13, at most 0.49.
    errors = []
    for seed in range(1, 9):
        logp_grad, log_z = _rotated_log_gamma(30, seed)
        result = sample_logdensity(logp_grad, 30, draws=1000, random_seed=seed)
        assert float(result.stage_stats["bridge_passes"][0]) >= 2
        errors.append(abs(float(result.log_marginal_likelihood[0]) - log_z))
    assert np.mean(errors) < 0.25, np.round(errors, 3)


@pytest.mark.parametrize("seed", [1, 2])
def test_an_unconverged_population_is_warned(seed):
    # One refinement sweep after a 3-level unadjusted annealing leaves a quarter of the
    # particles where the importance resampling put them (measured: 26 % and 23 % unmoved).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sample_logdensity(
            _banana_logp_grad, 2, draws=1000, random_seed=seed, refine_sweeps=1, n_levels=3,
            anneal_metropolis=False,
        )  # fmt: skip
    assert _convergence_warnings(caught)
    assert "refine_sweeps" in _convergence_warnings(caught)[0]
    stats = result.stage_stats
    assert float(stats["unmoved_share"][0]) > 0.05


def test_a_well_posed_density_passes_the_convergence_checks():
    # The same banana with the defaults: right, and no convergence warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sample_logdensity(_banana_logp_grad, 2, draws=2000, random_seed=3)
    assert not _convergence_warnings(caught)
    x0 = result.samples[:, 0]
    assert abs(x0.mean()) < 0.15 and abs(x0.std() / 2.0 - 1) < 0.08
    stats = result.stage_stats
    assert float(stats["subpopulation_rhat"][0]) < 1.01
    assert float(stats["stein_mean_z"][0]) < 5 and float(stats["stein_cov_z"][0]) < 5


def _sweeps_run(result) -> int:
    return int(np.sum(np.isfinite(np.asarray(result.stage_stats["jump_acceptance"][0]))))


def _correlated_gaussian(xs):
    precision = np.linalg.inv(np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 2.0]]))
    return -0.5 * np.einsum("ni,ij,nj->n", xs, precision, xs), -xs @ precision


def test_the_refinement_stops_when_the_population_passes_its_checks():
    # A Gaussian passes its checks at the first sweep after the step sizes are fixed (the
    # sixth), the curved banana before the tenth (measured: the ninth). Neal's funnel, whose
    # bridged particles miss its mouth, may pass them too (PyMC 5.28 at this seed: sweep 6;
    # PyMC 6.4: never, all ten run); it is then reported by the bridges' disagreement.
    gaussian = sample_logdensity(_correlated_gaussian, 3, draws=2000, random_seed=3)
    assert _sweeps_run(gaussian) == 6
    banana = sample_logdensity(_banana_logp_grad, 2, draws=2000, random_seed=3)
    assert _sweeps_run(banana) < 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        funnel = sample_logdensity(_funnel_logp_grad, 9, draws=1000, random_seed=3)
    assert _sweeps_run(funnel) == 10 or any(
        "bridges" in str(w.message) for w in caught if w.category is UnreliableResultWarning
    )


def test_the_spread_bound_holds_for_draws_and_fails_for_a_collapsed_population():
    from pymc_dilation.engine.convergence import SPREAD_LIMIT, stein_spread

    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 2.0]])
    draws = rng.multivariate_normal(np.zeros(3), cov, size=2000)
    _, grads = _correlated_gaussian(draws)
    exact = stein_spread(draws, grads, 2000)
    assert 0.9 < exact < 1.3  # a Gaussian sits on the bound
    narrow = draws * np.array([1.0, 1.0, 0.2])  # one direction five times too narrow
    _, narrow_grads = _correlated_gaussian(narrow)
    assert stein_spread(narrow, narrow_grads, 2000) < SPREAD_LIMIT
    wide = draws * 3.0  # too wide is not what this bound sees
    _, wide_grads = _correlated_gaussian(wide)
    assert stein_spread(wide, wide_grads, 2000) > 1.0
    assert np.isnan(stein_spread(draws[:3], grads[:3], 3))


def test_the_drift_check_sees_a_population_still_travelling():
    from pymc_dilation.engine.convergence import failed_checks, population_checks

    # An exact kernel for N(0, I) (an autoregressive move) leaves a population drawn from it
    # where it was; the same kernel on a population one sd off moves its mean by 0.2 sd a
    # sweep, which its paired differences make 15 standard errors.
    rng = np.random.default_rng(4)
    n, rho = 2000, 0.8

    def sweep(us):
        return rho * us + np.sqrt(1 - rho**2) * rng.standard_normal(us.shape)

    for offset, failing in ((0.0, False), (1.0, True)):
        before = rng.standard_normal((n, 5)) + np.array([offset, 0, 0, 0, 0])
        after = sweep(before)
        figures = population_checks(before, after, -after, np.ones(n), before)
        assert ("drift_z" in failed_checks(figures, n)) is failing, figures
    assert np.isnan(population_checks(before, after, -after, np.ones(n))["drift_z"])


def test_the_stopping_test_is_stricter_than_the_warnings():
    from pymc_dilation.engine.convergence import STOP_MARGIN, failed_checks

    n = 2000
    quiet = {
        "stein_mean_z": 1.0, "stein_mean_effect": 0.02, "stein_cov_z": 1.0,
        "stein_cov_effect": 0.05, "subpopulation_rhat": 1.002, "particle_ess": 1600.0,
        "stuck_share": 0.01, "unmoved_share": 0.0,
    }  # fmt: skip
    assert failed_checks(quiet, n) == [] and failed_checks(quiet, n, STOP_MARGIN) == []
    wavering = dict(quiet, stein_cov_z=4.0, stein_cov_effect=0.3, particle_ess=1000.0)
    assert failed_checks(wavering, n) == []  # no warning...
    assert failed_checks(wavering, n, STOP_MARGIN) == ["stein_cov_z", "particle_ess"]  # ...no stop
    assert failed_checks(dict(quiet, unmoved_share=0.5), n) == ["unmoved_share"]
    assert failed_checks(dict(quiet, particle_ess=np.nan), n) == []


def test_centered_eight_schools_is_right(draws_of):
    # theta ~ N(mu, tau): a funnel, sampled non-centered by default. Reference (posteriordb):
    # mu 4.41 ± 3.31, tau 3.60 ± 3.20. As written, tau's mean was 1e95 (escaped particles).
    y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    with pm.Model(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfCauchy("tau", 5.0)
        theta = pm.Normal("theta", mu, tau, shape=8)
        pm.Normal("y", theta, sigma, observed=y)
        idata = sample_dilation(draws=1000, random_seed=1, progressbar=False)
    assert abs(draws_of(idata, "mu").mean() - 4.41) < 0.15 * 3.31
    assert abs(draws_of(idata, "tau").mean() - 3.60) < 0.15 * 3.20
    assert abs(draws_of(idata, "tau").std() / 3.20 - 1) < 0.15
    assert not _convergence_warnings(caught)


def test_the_progress_bar_fits_80_columns():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from pymc_dilation.sampling import progress_columns, stage_label

    for completed in (0, 7, 1000, 1029):
        console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
        progress = Progress(*progress_columns(), console=console)
        task = progress.add_task("", total=1030, chain=15, stage=stage_label(0, 1000, 30))
        progress.update(task, completed=completed, stage=stage_label(completed, 1000, 30))
        console.print(progress.make_tasks_table(progress.tasks))
        line = console.file.getvalue().rstrip("\n")
        assert "\n" not in line and len(line) <= 80, line
        assert "Chain 15" in line and f"{completed}/1030" in line
        assert stage_label(completed, 1000, 30) in line and "…" not in line


def test_plot_titles_are_not_cut():
    with pm.Model():
        pm.Normal(
            "coefficients_of_the_interaction_between_height_and_sex_in_this_model",
            0.0,
            1.0,
            shape=2,
        )
        pm.Normal("mu", 0.0, 1.0)
        idata = sample_dilation(
            draws=200, n_levels=3, refine_sweeps=2, random_seed=1, progressbar=False
        )
    figure = plot_modes(idata)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    fig_box = figure.bbox
    visible = [ax for ax in figure.axes if ax.get_visible()]
    titles = [ax.title for ax in visible] + [figure._suptitle]
    assert "coefficients_of_the" in visible[0].get_title()
    for title in titles:
        box = title.get_window_extent(renderer)
        assert fig_box.x0 <= box.x0 and box.x1 <= fig_box.x1 and box.y1 <= fig_box.y1
    for left, right in zip(visible[:-1], visible[1:]):  # neighbours' titles do not overlap
        a, b = left.title.get_window_extent(renderer), right.title.get_window_extent(renderer)
        assert a.x1 <= b.x0 or abs(a.y0 - b.y0) > 1


def test_sample_stats_use_the_step_methods_names(conjugate_normal):
    model, _, _ = conjugate_normal
    with model:
        idata = sample_dilation(draws=300, n_levels=5, random_seed=2, progressbar=False)
    stats = idata.sample_stats
    for name in ("dilation", "step_size", "acceptance_rate", "divergences"):
        assert stats[name].dims == ("chain", "stage")
    for name in ("lp", "diverging"):
        assert stats[name].dims == ("chain", "draw")
    assert stats["diverging"].dtype == bool
    assert np.all(np.diff(np.asarray(stats["divergences"][0])) >= 0)  # a running count
    np.testing.assert_allclose(np.asarray(stats["dilation"][0])[-1], 1.0)


def _bumps(means, sds, weights):
    """Normalised isotropic Gaussian mixture: batched log density and gradient."""
    means, sds, weights = map(np.asarray, (means, sds, weights))

    def logp_grad(ys):
        dim = ys.shape[1]
        diff = ys[:, None, :] - means[None]
        comp = (
            np.log(weights)
            - dim * np.log(sds)
            - 0.5 * dim * np.log(2 * np.pi)
            - 0.5 * (diff**2).sum(-1) / sds**2
        )
        top = comp.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(comp - top).sum(axis=1))
        resp = np.exp(comp - lse[:, None])
        return lse, -(resp[:, :, None] * diff / sds[None, :, None] ** 2).sum(axis=1)

    return logp_grad


def _one_mode_state(logp_grad, location, root, n, rng):
    from pymc_dilation.engine.explore import AnnealState

    ys = location + rng.normal(size=(n, len(location))) @ root.T
    lps, grads = logp_grad(ys)
    modes = ModeMap(
        locations=location[None], means=location[None], roots=root[None],
        logp=logp_grad(location[None])[0], labels=np.zeros(n, dtype=int), n_grad=0,
    )  # fmt: skip
    state = AnnealState(ys, lps, grads, np.full(n, 0.5), 0)
    return modes, state


def test_uneven_importance_weights_reveal_a_mode_the_map_lacks():
    # A narrow mode of half the mass 3.5 sds beside a wide one; the map holds only the wide
    # one. A few importance draws land on the narrow peak with huge weights: they climb to
    # it, it joins the map, and the weights are estimated again. Without that the map keeps
    # one mode of weight 1 (and a chain of the step method would never visit the other).
    from pymc_dilation.engine.population import _weigh

    logp_grad = _bumps([[0.0, 0.0], [3.5, 0.0]], [1.0, 0.3], [0.5, 0.5])
    rng = np.random.default_rng(3)
    modes, state = _one_mode_state(logp_grad, np.zeros(2), np.eye(2), 512, rng)
    mapped = _weigh(PopulationTarget(2, logp_grad), state, modes, rng)
    assert mapped.modes.n_modes == 2
    np.testing.assert_allclose(mapped.modes.locations[1], [3.5, 0.0], atol=0.05)
    np.testing.assert_allclose(mapped.estimate.weights, [0.5, 0.5], atol=0.05)
    assert abs(mapped.estimate.log_evidence) < 0.05  # normalised target: log Z = 0
    assert mapped.resampled


def test_uneven_importance_weights_widen_a_mode_whose_gaussian_misses_a_shoulder():
    # One mode with a shoulder (two overlapping bumps, one peak) mapped with a Gaussian far
    # too narrow: the heavy draws climb back to the same peak, so the mode's Gaussian is
    # widened towards the draws' importance-weighted moments until the weights are even
    # enough to trust (without it the importance ESS stays below DISCOVERY_ESS).
    from pymc_dilation.engine.population import DISCOVERY_ESS, _weigh

    logp_grad = _bumps([[0.0, 0.0, 0.0], [1.6, 0.0, 0.0]], [1.0, 1.0], [0.7, 0.3])
    rng = np.random.default_rng(4)
    modes, state = _one_mode_state(logp_grad, np.zeros(3), 0.25 * np.eye(3), 512, rng)
    before, _ = estimate_weights(logp_grad, mode_proposal(modes, np.ones(1), 0.5), 512, rng)
    assert before.ess < DISCOVERY_ESS * 512
    mapped = _weigh(PopulationTarget(3, logp_grad), state, modes, rng)
    assert mapped.modes.n_modes == 1
    root = mapped.modes.roots[0]
    sds = np.sqrt(np.diag(root @ root.T))
    exact = np.array([np.sqrt(1.0 + 0.7 * 0.3 * 1.6**2), 1.0, 1.0])
    assert np.all((0.4 < sds) & (sds < 1.5 * exact)), sds  # widened from 0.25, not beyond
    assert mapped.estimate.ess > DISCOVERY_ESS * 512
    assert abs(mapped.estimate.log_evidence) < 3 * mapped.estimate.log_evidence_se  # log Z = 0


def test_particles_without_a_finite_density_are_never_reported():
    # A GP's amplitude at 1.7e6 with a NaN log density was reported as a draw (NaN in f).
    from pymc_dilation.engine.population import replace_invalid

    rng = np.random.default_rng(0)
    ys = rng.normal(size=(6, 2))
    lps = np.zeros(6)
    lps[1] = np.nan
    ys[4, 0] = np.inf
    labels = np.arange(6)
    diverging = np.zeros(6, dtype=bool)
    share = replace_invalid(ys, lps, labels, diverging, rng)
    assert share == pytest.approx(2 / 6)
    assert np.all(np.isfinite(ys)) and np.all(np.isfinite(lps))
    assert diverging[[1, 4]].all() and not diverging[[0, 2, 3, 5]].any()
    assert set(labels[[1, 4]]) <= {0, 2, 3, 5}
    from pymc_dilation.diagnostics import convergence_reasons

    stats = xr.Dataset(
        {"invalid_share": (("chain",), [share])}, coords={"draw": np.arange(6), "chain": [0]}
    )
    assert "without a finite log density" in convergence_reasons(stats)[0]


def test_lbfgs_directions_read_the_ring_buffers_newest_first():
    # The two-loop recursion from each row's last ASCENT_MEMORY pairs, oldest to newest, as
    # textbook L-BFGS computes it, against the compiled one reading ring buffers that have
    # wrapped around (and a row with no pair, which gets the gradient itself).
    rng = np.random.default_rng(3)
    m, dim, n_pairs = modes_module.ASCENT_MEMORY, 7, 9
    a = rng.standard_normal((dim, dim))
    hessian = a @ a.T + dim * np.eye(dim)  # curvature pairs of a concave quadratic
    pairs = [(s, hessian @ s) for s in rng.standard_normal((n_pairs, dim))]
    g = rng.standard_normal((2, dim))
    s_buf, y_buf = np.zeros((2, m, dim)), np.zeros((2, m, dim))
    rho = np.zeros((2, m))
    newest, count = np.full(2, m - 1), np.zeros(2, dtype=np.int64)
    for s, y in pairs:
        newest[0] = (newest[0] + 1) % m
        s_buf[0, newest[0]], y_buf[0, newest[0]], rho[0, newest[0]] = s, y, 1.0 / (s @ y)
        count[0] = min(count[0] + 1, m)
    directions = modes_module._lbfgs_directions(
        g, s_buf, y_buf, rho, newest, count, np.array([0, 1])
    )
    q, alphas = g[0].copy(), []
    for s, y in reversed(pairs[-m:]):
        alphas.append((s @ q) / (s @ y))
        q -= alphas[-1] * y
    s_last, y_last = pairs[-1]
    r = (s_last @ y_last) / (y_last @ y_last) * q
    for (s, y), alpha in zip(pairs[-m:], reversed(alphas)):
        r += s * (alpha - (y @ r) / (s @ y))
    np.testing.assert_allclose(directions[0], r, rtol=1e-10)
    np.testing.assert_allclose(directions[1], g[1])


def test_polish_without_a_known_optimum_polishes_every_row_but_the_skipped():
    rng = np.random.default_rng(7)
    points = exact_draws(40, rng)
    optima = map_modes(mixture_logp_grad, points, *mixture_logp_grad(points)).locations
    starts = optima + 0.05  # near each optimum, off it
    lps, _ = mixture_logp_grad(starts)
    places, _, converged, _, _ = modes_module._polish(
        mixture_logp_grad, starts, lps, None, modes_module.VALLEY_DEPTH
    )
    assert converged.all()
    np.testing.assert_allclose(places, optima, atol=1e-6)
    skip = np.arange(len(starts)) == 0
    places, _, converged, _, _ = modes_module._polish(
        mixture_logp_grad, starts, lps, None, modes_module.VALLEY_DEPTH, skip=skip
    )
    assert not converged[0] and converged[1:].all()
    np.testing.assert_array_equal(places[0], starts[0])
