"""Independent factors of a density (engine.blocks) and sample_dilation on products of them."""

import json
import warnings

import numpy as np
import pymc as pm
import pytest
from scipy.integrate import quad

from pymc_dilation import sample_dilation, sample_logdensity
from pymc_dilation._compat import group_dataset
from pymc_dilation.engine.blocks import factor_groups, interaction_blocks, is_additive


def _wells(k: int, seed: int, tilted: bool = True):
    """k independent double wells (asymmetric when ``tilted``), exact right-well shares and
    log Z, and their parameters (``benchmarks.products``' without the prior)."""
    rng = np.random.default_rng([k, seed, 7])
    barrier, tilt, width = rng.uniform(2, 4, k), rng.uniform(0.2, 0.6, k), rng.uniform(0.5, 2, k)
    tilt = tilt if tilted else np.zeros(k)

    def logp_grad(xs):
        u = xs / width
        lp = (-barrier * (u**2 - 1) ** 2 + tilt * u).sum(axis=1)
        return lp, (-4 * barrier * u * (u**2 - 1) + tilt) / width

    def factor(x, i):
        u = x / width[i]
        return np.exp(-barrier[i] * (u * u - 1) ** 2 + tilt[i] * u)

    right, log_z = [], 0.0
    for i in range(k):
        left_mass = quad(factor, -np.inf, 0, args=(i,))[0]
        right_mass = quad(factor, 0, np.inf, args=(i,))[0]
        right.append(right_mass / (left_mass + right_mass))
        log_z += np.log(left_mass + right_mass)
    return logp_grad, np.array(right), log_z, (barrier, tilt, width)


def _coupled(xs):
    """Two double wells linked by ``0.3 x0 x1`` and a third on its own."""
    lp = -((xs**2 - 1) ** 2).sum(axis=1) + 0.3 * xs[:, 0] * xs[:, 1]
    grad = -4 * xs * (xs**2 - 1)
    grad[:, 0] += 0.3 * xs[:, 1]
    grad[:, 1] += 0.3 * xs[:, 0]
    return lp, grad


def test_interaction_blocks_follow_the_cross_derivatives():
    points = np.random.default_rng(0).normal(size=(4, 3))
    blocks = interaction_blocks(_coupled, points)
    assert sorted(map(tuple, blocks)) == [(0, 1), (2,)]


def test_additivity_holds_for_a_product_and_fails_across_a_coupling():
    rng = np.random.default_rng(1)
    xs, ys = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    assert is_additive(_coupled, [np.array([0, 1]), np.array([2])], xs, ys)
    assert not is_additive(_coupled, [np.array([0]), np.array([1, 2])], xs, ys)


def test_only_blocks_with_several_modes_are_split():
    logp_grad, _, _, _ = _wells(3, 1)

    def with_gaussians(xs):  # three double wells and two unimodal coordinates
        lp, grad = logp_grad(xs[:, :3])
        return lp - 0.5 * (xs[:, 3:] ** 2).sum(axis=1), np.hstack([grad, -xs[:, 3:]])

    rng = np.random.default_rng(2)
    points = rng.normal(size=(16, 5))
    optima = np.hstack([np.sign(rng.normal(size=(16, 3))), np.zeros((16, 2))])
    blocks = interaction_blocks(with_gaussians, points[:4])
    groups = factor_groups(with_gaussians, blocks, points, optima)
    assert [g.tolist() for g in groups] == [[0], [1], [2], [3, 4]]
    unimodal = np.zeros((16, 5))
    assert factor_groups(with_gaussians, blocks, points, unimodal) is None


def test_a_product_of_double_wells_is_sampled_factor_by_factor():
    # 12 wells: 4096 modes. Mapped as enumerated modes (before the factors were found), the
    # per-factor shares were 0.038 off and log Z 0.46 low, in 6.8 s; factor by factor
    # (measured) 0.02 and 0.01 in under a second.
    logp_grad, right, log_z, _ = _wells(12, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sample_logdensity(logp_grad, 12, draws=2000, random_seed=1)
    shares = (result.samples.reshape(-1, 12) > 0).mean(axis=0)
    assert np.max(np.abs(shares - right)) < 0.03
    assert abs(float(result.log_marginal_likelihood[0]) - log_z) < 0.2
    assert json.loads(result.stage_stats.attrs["factors"]) == [[f"x[{i}]"] for i in range(12)]
    assert not [w for w in caught if "did not converge" in str(w.message)]


@pytest.mark.parametrize("tilted", [True, False])
def test_sample_dilation_factors_a_pymc_product(tilted):
    # The same in a PyMC model (Flat priors). Untilted wells are also symmetric under each
    # x_i -> -x_i (64 copies of one mode): the factors take precedence over folding the map
    # by those symmetries, which had left log Z 2.0-3.3 nats off (seeds 1-3, warned).
    k = 6
    _, right, log_z, (barrier, tilt, width) = _wells(k, 2, tilted)
    with pm.Model():
        x = pm.Flat("x", shape=k)
        u = x / width
        pm.Potential("wells", (-barrier * (u**2 - 1) ** 2 + tilt * u).sum())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            idata = sample_dilation(2000, random_seed=3, progressbar=False)
    draws = np.asarray(group_dataset(idata, "posterior")["x"]).reshape(-1, k)
    stats = group_dataset(idata, "sample_stats")
    assert np.max(np.abs((draws > 0).mean(axis=0) - right)) < 0.04
    assert abs(float(stats["log_marginal_likelihood"][0]) - log_z) < 0.2
    assert len(json.loads(stats.attrs["factors"])) == k
    assert not [w for w in caught if "nreliable" in type(w.message).__name__]


def test_stacked_mixtures_are_each_factors_own_proposal():
    """Factors of different sizes and numbers of modes, padded to one shape: each factor's
    log density is its proposal's to rounding, and its draws follow that proposal's law."""
    from scipy.stats import ks_2samp

    from pymc_dilation.engine.weights import MixtureProposal, StackedMixtures

    rng = np.random.default_rng(0)
    groups, proposals, start = [], [], 0
    for size, k in [(1, 2), (3, 2), (2, 4), (1, 3)]:
        a = rng.normal(size=(k, size, size))
        roots = np.linalg.cholesky(a @ a.transpose(0, 2, 1) + np.eye(size))
        proposals.append(MixtureProposal(3.0 * rng.normal(size=(k, size)), roots,
                                         rng.dirichlet(np.ones(k))))  # fmt: skip
        groups.append(np.arange(start, start + size)[::-1].copy())
        start += size
    stacked = StackedMixtures(groups, proposals)
    for _ in range(5):
        x = 3.0 * rng.normal(size=start)
        own = [p.log_density(x[g][None])[0] for p, g in zip(proposals, groups, strict=True)]
        np.testing.assert_allclose(stacked.log_density(stacked.gather(x)), own, rtol=1e-12)
    draws = np.array([stacked.draw(rng) for _ in range(4000)])  # (n, B, D)
    for b, (p, g) in enumerate(zip(proposals, groups, strict=True)):
        assert np.all(draws[:, b, len(g) :] == 0.0)
        theirs = p.draw(rng, 4000)
        for j in range(len(g)):
            assert ks_2samp(draws[:, b, j], theirs[:, j]).pvalue > 1e-3


def test_dilation_langevin_jumps_factor_by_factor():
    # Eight tilted double wells (256 modes). Without the factor jumps each chain kept most of
    # the wells it started in (measured here: worst factor 0.21 off in one chain, 0.12
    # pooled; benchmarks: 0.10-0.50 on 8-16 wells, warned); with them every factor's
    # right-well share is within 0.05 in each chain.
    from benchmarks import products
    from pymc_dilation import DilationLangevin

    with products.build_model("wells8-1"):
        idata = pm.sample(
            draws=1000, tune=1000, chains=2, cores=1, step=DilationLangevin(), random_seed=1,
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    draws = np.asarray(idata.posterior["x"])  # (chain, draw, k)
    assert np.all(np.isfinite(np.asarray(idata.sample_stats["factor_jump_acceptance"])))
    exact = products.exact("wells8-1")["shares"]
    assert np.max(np.abs((draws > 0).mean(axis=1) - exact)) < 0.05


def test_dilation_langevin_on_symmetric_wells_started_at_their_saddle():
    # Untilted wells started at x = 0, where every factor's density has a minimum: the
    # curvature there is degenerate, its whitened coordinates map nothing back, and the
    # factor jumps are not built (building them raised LinAlgError); the sign-flip
    # symmetries' jumps give every factor its even share.
    from pymc_dilation import DilationLangevin

    _, _, _, (barrier, _, width) = _wells(6, 2, tilted=False)
    with pm.Model():
        x = pm.Normal("x", 0.0, 5.0, shape=6)
        u = x / width
        pm.Potential("wells", (-barrier * (u**2 - 1) ** 2).sum())
        idata = pm.sample(
            draws=500, tune=500, chains=2, cores=1, step=DilationLangevin(), random_seed=1,
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    shares = (np.asarray(idata.posterior["x"]) > 0).mean(axis=1)
    assert np.max(np.abs(shares - 0.5)) < 0.1  # 4.5 binomial se at 500 draws; a stuck chain: 0.5
