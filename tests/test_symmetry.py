"""Symmetries of the posterior: the group's action, the exact jump, detection on models, and
both samplers on posteriors whose copies no gradient crosses."""

import warnings
from itertools import permutations

import numpy as np
import pymc as pm
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

import pymc_dilation as pdl
from pymc_dilation.diagnostics import UnreliableResultWarning
from pymc_dilation.engine.symmetry import (
    ElementStream,
    GroupFactor,
    SymmetryGroup,
    moves_mode,
    orbit_mass_ratio,
    symmetry_move,
)
from pymc_dilation.model import compile_model_logp, prior_sampler
from pymc_dilation.symmetry import Symmetries, announce, find_symmetries, symmetry_test_points


def _simplex_values(w):
    """PyMC's simplex transform: the first K-1 entries of the centered log weights."""
    log_w = np.log(w)
    return (log_w - log_w.mean(axis=-1, keepdims=True))[..., :-1]


def test_a_permutation_acts_on_simplex_values_as_on_the_weights():
    rng = np.random.default_rng(0)
    k = 4
    w = rng.dirichlet(np.ones(k), size=50)
    mu = rng.normal(size=(50, k))
    x = np.hstack([_simplex_values(w), mu])  # d = 3 + 4
    d = x.shape[1]
    completion = np.arange(k - 1)
    slots = np.column_stack([np.r_[np.arange(k - 1), d], np.arange(k - 1, 2 * k - 1)])
    group = SymmetryGroup(d, (completion,), (GroupFactor("permute", slots),))
    perm, sign = group.random_elements(rng, 50)
    images = group.apply(x, perm, sign)
    # Recover each row's label permutation from mu, and check w moved with it.
    for row, image, m in zip(w, images, mu, strict=True):
        order = [int(np.flatnonzero(np.isclose(m, v))[0]) for v in image[k - 1 :]]
        np.testing.assert_allclose(image[: k - 1], _simplex_values(row[order]), atol=1e-12)


def test_group_elements_are_uniform_and_compose_permutations_with_flips():
    rng = np.random.default_rng(1)
    slots = np.arange(3)[:, None]
    group = SymmetryGroup(
        3, (), (GroupFactor("permute", slots), GroupFactor("flip", slots))
    )  # the signed permutations of 3 coordinates: 48 elements
    assert group.order == 48
    perm, sign = group.all_elements()
    images = group.apply(np.tile([1.0, 2.0, 3.0], (48, 1)), perm, sign)
    assert len({tuple(row) for row in images}) == 48
    perm, sign = group.random_elements(rng, 48_000)
    images = group.apply(np.tile([1.0, 2.0, 3.0], (48_000, 1)), perm, sign)
    _, counts = np.unique(images, axis=0, return_counts=True)
    assert len(counts) == 48
    assert np.all(np.abs(counts / 48_000 - 1 / 48) < 5 * np.sqrt((1 / 48) / 48_000))


def test_a_stream_hands_out_uniform_elements_one_at_a_time():
    """Taken one by one across several batches, as a chain takes them: each of the 48
    signed permutations as often as uniform draws give it."""
    slots = np.arange(3)[:, None]
    group = SymmetryGroup(3, (), (GroupFactor("permute", slots), GroupFactor("flip", slots)))
    stream = ElementStream(group, np.random.default_rng(4))
    n = 9_600  # 37.5 batches
    images = []
    for _ in range(n):
        perm, sign = stream.take(1)
        images.append(group.apply(np.array([[1.0, 2.0, 3.0]]), perm, sign)[0])
    _, counts = np.unique(np.array(images), axis=0, return_counts=True)
    assert len(counts) == 48
    assert np.all(np.abs(counts / n - 1 / 48) < 5 * np.sqrt((1 / 48) / n))
    perm, sign = stream.take(300)  # more than a batch at once
    assert perm.shape == sign.shape == (300, 3)


@pytest.mark.parametrize("labels", [3, 8])
def test_moves_mode_tells_a_mode_its_symmetry_moves_from_one_it_keeps(labels):
    """Exact for an enumerable group, whether the sampled elements find the move or not."""
    slots = np.arange(labels)[:, None]
    group = SymmetryGroup(labels, (), (GroupFactor("permute", slots),))
    rng = np.random.default_rng(5)
    root = np.eye(labels)
    assert not moves_mode(group, np.zeros(labels), root, rng)  # every image is the mode
    apart = np.zeros(labels)
    apart[-1] = 5.0  # one label 5 sds from the others: any element moving it moves the mode
    assert moves_mode(group, apart, root, rng)
    assert not moves_mode(group, apart, 10.0 * root, rng)  # images within the mode's width


def test_the_log_line_of_a_large_group_stays_short(caplog):
    """99 permuted and flipped labels have 5.9e+185 copies of each mode, 186 digits."""
    slots = np.arange(99)[:, None]
    group = SymmetryGroup(99, (), (GroupFactor("permute", slots), GroupFactor("flip", slots)))
    with caplog.at_level("INFO", logger="pymc"):
        announce(Symmetries(exact=group), "sample_dilation")
    (line,) = [r.getMessage() for r in caplog.records if "copies" in r.getMessage()]
    assert "about 5.9e+185 copies" in line and len(line) < 300


def test_factors_reject_invalid_slots():
    with pytest.raises(ValueError, match="kind"):
        GroupFactor("rotate", np.zeros((2, 1), dtype=int))
    with pytest.raises(ValueError, match="two labels"):
        GroupFactor("permute", np.zeros((1, 1), dtype=int))
    with pytest.raises(ValueError, match="distinct"):
        GroupFactor("flip", np.zeros((2, 1), dtype=int))


def _two_wells(weight_right: float):
    def logp(xs):
        x = xs[:, 0]
        return np.logaddexp(
            np.log(weight_right) + norm.logpdf(x, 3.0, 1.0),
            np.log1p(-weight_right) + norm.logpdf(x, -3.0, 1.0),
        )

    return logp


def test_symmetry_move_gives_a_symmetric_posterior_its_copies_from_one_of_them():
    rng = np.random.default_rng(2)
    group = SymmetryGroup(1, (), (GroupFactor("flip", np.array([[0]])),))
    logp = _two_wells(0.5)
    xs = rng.normal(3.0, 1.0, size=(4000, 1))  # every draw in the right copy
    move = symmetry_move(group, xs, logp(xs), logp, rng)
    share = float((move.points[:, 0] > 0).mean())
    assert abs(share - 0.5) < 4 * np.sqrt(0.25 / 4000)
    assert move.accepted.all()
    np.testing.assert_allclose(move.lps, logp(move.points))


def test_symmetry_move_keeps_an_asymmetric_posterior_exact():
    """A flip that is not a symmetry is a proposal like any other: the MH test keeps the
    0.7/0.3 shares of exact draws (an always-accepted flip would give 0.5)."""
    rng = np.random.default_rng(3)
    group = SymmetryGroup(1, (), (GroupFactor("flip", np.array([[0]])),))
    logp = _two_wells(0.7)
    n = 20_000
    right = rng.uniform(size=n) < 0.7
    xs = np.where(right, rng.normal(3.0, 1.0, n), rng.normal(-3.0, 1.0, n))[:, None]
    move = symmetry_move(group, xs, logp(xs), logp, rng)
    share = float((move.points[:, 0] > 0).mean())
    assert abs(share - 0.7) < 4 * np.sqrt(0.21 / n)
    assert 0.3 < move.accepted.mean() < 0.9


def test_orbit_mass_ratio_counts_the_copies_no_mode_covers():
    group = SymmetryGroup(2, (), (GroupFactor("permute", np.array([[0], [1]])),))
    roots = np.tile(0.1 * np.eye(2), (2, 1, 1))
    one = np.array([[1.0, -1.0]])
    assert orbit_mass_ratio(group, one, roots[:1], np.array([1.0])) == pytest.approx(2.0)
    both = np.array([[1.0, -1.0], [-1.0, 1.0]])
    assert orbit_mass_ratio(group, both, roots, np.array([0.5, 0.5])) == pytest.approx(1.0)
    fixed = np.array([[0.5, 0.5]])  # on the mirror: its own copy
    assert orbit_mass_ratio(group, fixed, roots[:1], np.array([1.0])) == pytest.approx(1.0)
    mixed = np.array([[1.0, -1.0], [0.5, 0.5]])  # one copy of two, and a fixed mode
    ratio = orbit_mass_ratio(group, mixed, roots, np.array([0.4, 0.6]))
    assert ratio == pytest.approx(0.4 * 2 + 0.6)


def _mixture_model(ordered: bool = False, k: int = 3):
    rng = np.random.default_rng(4)
    data = np.concatenate([rng.normal(c, 1.0, 60) for c in np.linspace(-5, 5, k)])
    with pm.Model() as model:
        kwargs = {}
        if ordered:
            kwargs = dict(transform=pm.distributions.transforms.ordered, initval=np.arange(k))
        mu = pm.Normal("mu", 0.0, 10.0, shape=k, **kwargs)
        sigma = pm.HalfNormal("sigma", 2.0, shape=k)
        w = pm.Dirichlet("w", np.ones(k))
        pm.NormalMixture("y", w=w, mu=mu, sigma=sigma, observed=data)
    return model


def _factor_model():
    rng = np.random.default_rng(5)
    data = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 30)) + 0.3 * rng.normal(size=(6, 30))
    coords = {"item": range(6), "factor": range(2), "obs": range(30)}
    with pm.Model(coords=coords) as model:
        loadings = pm.Normal("W", 0.0, 1.0, dims=("item", "factor"))
        factors = pm.Normal("F", 0.0, 1.0, dims=("factor", "obs"))
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Normal("Y", loadings @ factors, sigma, observed=data)
    return model


def _eight_schools():
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfCauchy("tau", 5.0)
        z = pm.Normal("z", 0.0, 1.0, shape=8)
        sigma = np.array([15, 10, 16, 11, 9, 11, 10, 18.0])
        pm.Normal("y", mu + tau * z, sigma, observed=np.array([28, 8, -3, 7, -1, 1, 18, 12.0]))
    return model


def _squared_model(prior: str = "flat"):
    """A one-parameter likelihood with two symmetric solutions (theta = +-2), modes ~0.01
    wide, the start beside one of them (issue 23's first class)."""
    y = np.random.default_rng(0).normal(4.0, 0.5, 60)
    with pm.Model() as model:
        if prior == "flat":
            theta = pm.Flat("theta", initval=1.5)
        else:
            theta = pm.Normal("theta", 0.3, 3.0, initval=1.5)  # not symmetric about 0
        pm.Normal("y", theta**2, 0.5, observed=y)
    return model, y


def _found(model):
    logp = compile_model_logp(model)
    extra = logp.ravel_extra(model.initial_point())
    draw = prior_sampler(model, logp.var_infos)
    pool = None if draw is None else draw(8, 1)
    density = lambda xs: logp.logp_grad_batch(xs, extra)[0]  # noqa: E731
    points = symmetry_test_points(logp.ravel(model.initial_point()), pool, density)
    return find_symmetries(model, logp, extra, points).describe()


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: _mixture_model(), ["mu, sigma, w: 3 labels permuted"]),
        (lambda: _mixture_model(ordered=True), []),
        (_factor_model, ["W, F: 2 labels permuted", "W, F: 2 signs flipped"]),
        (lambda: _squared_model()[0], ["theta: sign flipped"]),
        (lambda: _squared_model("normal")[0], ["theta: sign flipped (nearly)"]),
        (_eight_schools, []),
    ],
    ids=["mixture", "ordered-mixture", "factor", "squared-flat", "squared-asymmetric", "schools"],
)
def test_symmetries_are_found_where_they_are_and_only_there(build, expected):
    found = _found(build())
    if build is _eight_schools:  # weak data: permuting z may pass as a near symmetry or not
        found = [text for text in found if not text.endswith("(nearly)")]
    assert found == expected


def _exact_squared(y, prior: str = "flat"):
    """log Z and P(theta > 0) by quadrature."""
    grid = np.linspace(-4.0, 4.0, 200_001)
    ll = np.concatenate(
        [norm.logpdf(y[None], (g**2)[:, None], 0.5).sum(1) for g in np.array_split(grid, 20)]
    )
    if prior != "flat":
        ll += norm.logpdf(grid, 0.3, 3.0)
    log_z = logsumexp(ll) + np.log(grid[1] - grid[0])
    return log_z, float(np.exp(logsumexp(ll[grid > 0]) - logsumexp(ll)))


def test_dilation_langevin_samples_both_copies_of_a_flat_prior_model_in_every_chain():
    """Before: 0.00-0.13 of the draws in the far mode, no warning (exact 0.5)."""
    model, _ = _squared_model()
    with model:
        step = pdl.DilationLangevin()
        idata = pm.sample(
            draws=400, tune=300, chains=2, cores=1, step=step, random_seed=1,
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    assert step.symmetries == ["theta: sign flipped"]
    theta = idata.posterior["theta"].values
    shares = (theta > 0).mean(axis=1)
    assert np.all(np.abs(shares - 0.5) < 4 * np.sqrt(0.25 / 400)), shares
    assert np.all(np.abs(np.abs(theta) - 2.0) < 0.1)
    accept = idata.sample_stats["symmetry_acceptance"].values
    assert np.all(accept == 1.0)


def test_a_chain_without_symmetry_jumps_stays_in_one_copy():
    model, _ = _squared_model()
    with model:
        step = pdl.DilationLangevin(symmetry_jumps=False)
        idata = pm.sample(
            draws=200, tune=200, chains=1, step=step, random_seed=1, progressbar=False,
            compute_convergence_checks=False,
        )  # fmt: skip
    assert step.symmetries == []
    assert np.isnan(idata.sample_stats["symmetry_acceptance"].values).all()


def test_sample_dilation_counts_the_copy_it_did_not_reach_in_the_evidence():
    model, y = _squared_model()
    idata = pdl.sample_dilation(draws=1000, chains=2, random_seed=2, progressbar=False, model=model)
    theta = idata.posterior["theta"].values
    assert np.all(np.abs((theta > 0).mean(axis=1) - 0.5) < 4 * np.sqrt(0.25 / 1000))
    log_z = idata.sample_stats["log_marginal_likelihood"].values
    exact = _exact_squared(y)[0]
    assert np.all(np.abs(log_z - exact) < 0.1), (log_z, exact)
    assert "theta: sign flipped" in idata.sample_stats.attrs["symmetries"]


def test_a_near_symmetry_is_an_exact_jump_of_the_chain_under_a_weak_prior():
    """The prior N(0.3, 3) makes the mirrored mode less likely (exact share of theta > 0:
    0.55): the flip is proposed to the chain itself, so the shares are the posterior's."""
    model, y = _squared_model("normal")
    log_z, share = _exact_squared(y, "normal")
    with model:
        step = pdl.DilationLangevin()
        idata = pm.sample(
            draws=1000, tune=300, chains=2, cores=1, step=step, random_seed=4,
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    assert step.symmetries == ["theta: sign flipped (nearly)"]
    shares = (idata.posterior["theta"].values > 0).mean(axis=1)
    assert np.all(np.abs(shares - share) < 0.06), (shares, share)
    population = pdl.sample_dilation(
        draws=1000, chains=2, random_seed=4, progressbar=False, model=model
    )
    shares = (population.posterior["theta"].values > 0).mean(axis=1)
    assert np.all(np.abs(shares - share) < 0.06), (shares, share)
    log_zs = population.sample_stats["log_marginal_likelihood"].values
    assert np.all(np.abs(log_zs - log_z) < 0.1), (log_zs, log_z)


def test_every_chain_spreads_a_mixture_over_its_label_orders():
    """Four exchangeable components, well apart: 24 orders of 1/24 each. Without symmetry
    jumps every chain stays in one order (share error 0.96); with them each chain's share of
    each order is within 5 binomial sds (0.045 at 500 draws)."""
    rng = np.random.default_rng(6)
    data = np.concatenate([rng.normal(c, 0.7, 60) for c in (-6.0, -2.0, 2.0, 6.0)])
    with pm.Model():
        mu = pm.Normal("mu", 0.0, 10.0, shape=4)
        sigma = pm.HalfNormal("sigma", 2.0, shape=4)
        w = pm.Dirichlet("w", np.ones(4))
        pm.NormalMixture("y", w=w, mu=mu, sigma=sigma, observed=data)
        idata = pm.sample(
            draws=500, tune=500, chains=2, cores=1, step=pdl.DilationLangevin(),
            random_seed=3, progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    mu = idata.posterior["mu"].values  # (chain, draw, 4)
    ranks = np.argsort(np.argsort(mu, axis=-1), axis=-1)
    orders = list(permutations(range(4)))
    for chain in ranks:
        shares = np.array([np.all(chain == p, axis=1).mean() for p in orders])
        assert np.max(np.abs(shares - 1 / 24)) < 5 * np.sqrt((1 / 24) * (23 / 24) / 500)
    sorted_mu = np.sort(mu, axis=-1).mean(axis=(0, 1))
    np.testing.assert_allclose(sorted_mu, [-6.0, -2.0, 2.0, 6.0], atol=0.3)


def test_symmetry_jumps_is_validated():
    model, _ = _squared_model()
    with model, pytest.raises(ValueError, match="symmetry_jumps"):
        pdl.DilationLangevin(symmetry_jumps="yes")
    with pytest.raises(ValueError, match="symmetry_jumps"):
        pdl.sample_dilation(draws=100, model=model, symmetry_jumps=1)


@pytest.mark.parametrize("seed", [1, 3])
def test_ascents_that_climb_on_keep_one_copy_of_each_mode(seed):
    # The label-switching NormalMixture has one mode up to its 3! label orders. Heads of the
    # tuning population that climb on far below the highest cross into other label orders;
    # unfolded, those copies entered the map (4-5 "modes" a chain on these seeds, and five
    # times the wall).
    from benchmarks import families

    with families.build_model("normal_mixture"):
        step = pdl.DilationLangevin()
        pm.sample(
            draws=5, tune=60, chains=1, cores=1, step=step, random_seed=seed,
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    assert step.mode_map.n_modes == 1


@pytest.mark.parametrize(
    "name, must_be_right",
    [("mixture4-1", True), ("mixture5-1", False), ("mixture4-2", False), ("mixture5-2", False)],
)
def test_sample_dilation_gets_a_label_switching_mixture_right_or_says_so(name, must_be_right):
    """The symmetric suite's generated mixtures (4 and 5 exchangeable components, 24 and 120
    label orders), scored by the sorted means against a long NUTS run with ordered means and
    by the order shares. Folded, the ascents of mixture4-1 settle on one mode on both PyMC
    versions and the result is right and quiet (sorted means 0.035 sd; 24 on 50f2900,
    warned). Where the ascents find several modes (which targets do depends on the PyMC
    version) every particle is annealed, and the result depends on the random stream
    (mixture5-2 on PyMC 6: 0.02 sd on one, 18 on another): it must then be right or warned,
    never silently wrong."""
    from benchmarks import symmetric

    with symmetric.build_model(name), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idata = pdl.sample_dilation(draws=2000, random_seed=1, progressbar=False)
    row = symmetric.score(name, idata)
    warned = [w for w in caught if w.category is UnreliableResultWarning]
    right = row["mean_err"] < 0.3 and row["pooled_err"] < 0.05
    if must_be_right:
        assert right and not warned, (row, [str(w.message) for w in warned])
    else:
        assert right or warned, row
