"""Automatic partial non-centering (pymc_dilation.reparam): what is reparameterized, that the
change of variables is exact, that the weights follow the data, and that funnels written
centered are sampled right by both samplers, with the draws as the user declared them."""

import warnings

import arviz as az
import numpy as np
import pymc as pm
import pytest

from pymc_dilation import DilationLangevin, sample_dilation
from pymc_dilation.model import compile_model_logp
from pymc_dilation.reparam import centering_weights

SAMPLE = {"chains": 2, "cores": 1, "progressbar": False, "compute_convergence_checks": False}
Y8 = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
# posteriordb eight_schools_noncentered reference draws: mean and sd of mu and tau.
MU_REF, TAU_REF = (4.41, 3.31), (3.60, 3.20)
TAU_QUANTILES = np.array([1.278, 2.747, 4.966, 7.721])  # its 0.25, 0.5, 0.75 and 0.9 quantiles


def _eight_schools():
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfCauchy("tau", 5.0)
        theta = pm.Normal("theta", mu, tau, shape=8)
        pm.Normal("y", theta, S8, observed=Y8)
    return model


def _hierarchy(noise: float, per_group: int, groups: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(groups), per_group)
    y = rng.normal(1.0, 1.0, groups)[group] + rng.normal(0.0, noise, group.size)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfNormal("tau", 2.5)
        theta = pm.Normal("theta", mu, tau, shape=groups)
        pm.Normal("y", theta[group], noise, observed=y)
    return model


def _neal_funnel(dim: int = 10):
    with pm.Model() as model:
        v = pm.Normal("v", 0.0, 3.0)
        pm.Normal("x", 0.0, pm.math.exp(v / 2), shape=dim - 1)
    return model


def test_what_is_reparameterized():
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        tau = pm.HalfNormal("tau", 1.0)
        pm.Normal("centered", mu, tau, shape=3)  # scale sampled: a funnel
        pm.Normal("fixed_scale", mu, 2.0, shape=2)  # constant scale: no funnel
        pm.StudentT("student", nu=4, mu=mu, sigma=tau)
        pm.LogNormal("positive", mu, tau)  # log value = mu + tau * z
        pm.Normal("own_transform", mu, tau, transform=pm.distributions.transforms.ordered,
                  shape=2)  # fmt: skip
    logp = compile_model_logp(model)
    assert logp.reparam.names == ("centered", "student", "positive_log__")
    assert logp.reparam.sizes == (3, 1, 1)
    # Only mu and tau sampled here, the rest by another step: nothing to reparameterize.
    assert compile_model_logp(model, vars=["mu", "tau"]).reparam is None
    # A location or scale that another step samples changes between draws: left as written.
    assert "centered" not in (compile_model_logp(model, vars=["centered"]).reparam or
                              type("", (), {"names": ()})).names  # fmt: skip
    assert compile_model_logp(model, reparameterize=False).reparam is None


def _nested():
    # Three levels: the groups' means are reparameterized, and so are the effects whose
    # location they are (their x(z) must enter the effects' map).
    with pm.Model() as model:
        top = pm.Normal("top", 0.0, 1.0)
        spread = pm.HalfNormal("spread", 1.0)
        means = pm.Normal("means", top, spread, shape=2)
        within = pm.LogNormal("within", 0.0, 0.5)
        effects = pm.StudentT("effects", nu=5, mu=means[[0, 0, 1]], sigma=within * spread)
        pm.Normal("y", effects, 1.0, observed=[0.5, -0.2, 1.0])
    return model


def _gp_field():
    # A latent field written as an MvNormal whose covariance the hyperparameters scale.
    x = np.linspace(0.0, 5.0, 6)[:, None]
    with pm.Model() as model:
        ls = pm.InverseGamma("ls", 5.0, 5.0)
        eta = pm.HalfNormal("eta", 1.0)
        cov = eta**2 * pm.gp.cov.ExpQuad(1, ls)(x) + 1e-4 * np.eye(6)
        f = pm.MvNormal("f", mu=0.5, cov=cov)
        pm.Poisson("y", pm.math.exp(f), observed=[1, 3, 2, 0, 4, 2])
    return model


def _walks():
    # Random walks whose step sd is sampled (stochastic volatility's funnel): one over time,
    # and three series at once with their own drifts (the walk runs along the last axis).
    with pm.Model() as model:
        step = pm.Exponential("step", 10.0)
        drift = pm.Normal("drift", 0.0, 0.1, shape=3)
        walk = pm.GaussianRandomWalk("walk", sigma=step, init_dist=pm.Normal.dist(0, 2), shape=6)
        series = pm.GaussianRandomWalk(
            "series", mu=drift[:, None], sigma=step, init_dist=pm.Normal.dist(1, 3), shape=(3, 4)
        )
        pm.Normal("y", walk, 0.5, observed=np.linspace(-1.0, 1.0, 6))
        pm.Normal("z", series, 0.5, observed=np.ones((3, 4)))
    return model


@pytest.mark.parametrize("build", [_eight_schools, _nested, _gp_field, _walks])
def test_the_change_of_variables_is_exact(build):
    # log p_z(z) = log p(x(z)) + sum((1 - w) log s), and the maps invert each other, for any
    # weights: checked against PyMC's own log density and a finite-difference Jacobian.
    model = build()
    logp = compile_model_logp(model)
    expected = {
        _eight_schools: ("theta",),
        _nested: ("means", "effects"),
        _gp_field: ("f",),
        _walks: ("walk", "series"),
    }
    assert logp.reparam.names == expected[build]
    model_logp = model.compile_logp()
    rng = np.random.default_rng(3)
    logp.reparam.weights = rng.uniform(0.0, 1.0, logp.reparam.index.size)
    point = model.initial_point()
    extra = logp.ravel_extra(point)
    zs = rng.normal(0.0, 1.0, (4, logp.dim))
    qs, log_jacobian = logp.reparam.to_model(zs, extra)
    np.testing.assert_allclose(logp.from_model(qs, extra), zs, atol=1e-10)
    for z, q, lj in zip(zs, qs, log_jacobian, strict=True):
        expected = model_logp(logp.unravel(q)) + lj
        assert logp.logp_grad(z, extra)[0] == pytest.approx(expected, rel=1e-9)
        h = 1e-6
        columns = [(logp.to_model(z + h * e, extra) - logp.to_model(z - h * e, extra)) / (2 * h)
                   for e in np.eye(logp.dim)]  # fmt: skip
        assert np.linalg.slogdet(np.array(columns))[1] == pytest.approx(lj, abs=1e-6)


@pytest.mark.parametrize(
    ("noise", "per_group", "expected"),
    [(4.0, 1, 0.0), (0.2, 30, 1.0)],
    ids=["weak data: non-centered", "strong data: as written"],
)
def test_the_weights_follow_the_data(noise, per_group, expected):
    model = _hierarchy(noise, per_group)
    logp = compile_model_logp(model)
    point = model.initial_point()
    weights = centering_weights(logp, logp.ravel(point), logp.ravel_extra(point))
    np.testing.assert_array_equal(weights, expected)


def test_eight_schools_weights_are_not_misled_by_the_joint_mode():
    # Its joint mode (non-centered) has tau 29; the Laplace-marginal mode is in the bulk, where
    # the data are weak: every school non-centered (the joint mode's scale gave 0.8 and a funnel).
    model = _eight_schools()
    logp = compile_model_logp(model)
    point = model.initial_point()
    weights = centering_weights(logp, logp.ravel(point), logp.ravel_extra(point))
    np.testing.assert_array_equal(weights, 0.0)


@pytest.mark.parametrize("cores", [1, 2])
def test_centered_eight_schools_is_sampled_right(cores):
    # Before: worst mean error 0.24 sd (mu, tau), divergences; NUTS diverges here too.
    with _eight_schools():
        step = DilationLangevin()
        idata = pm.sample(step=step, random_seed=1, **{**SAMPLE, "cores": cores})
    assert step.centering == {"theta": 0.0}
    # Non-centered, divergences are rare: seeds 1-12 (PyMC 5, 2 x 1000 draws each) gave 3 in
    # 24 000 draws (2 at 0a76853), at most 2 in one run.
    assert int(np.asarray(idata.sample_stats["diverging"]).sum()) <= 3
    for name, (mean, sd) in (("mu", MU_REF), ("tau", TAU_REF)):
        draws = np.asarray(idata.posterior[name]).ravel()
        assert abs(draws.mean() - mean) < 0.15 * sd, name
    # tau's spread by its quartiles and 90 % quantile, not its sd: tau's tail is heavy, and one
    # stretch of 27 rejected trajectories far out in it (seed 1 here; such stretches come in
    # about one run in 12-16, at 0a76853 too) moves the sd of 2000 draws by 47 % and
    # these quantiles by at most 4 %. Sampled as written, every one of them is 0.01-0.08 of
    # the reference's.
    tau = np.asarray(idata.posterior["tau"]).ravel()
    ratios = np.quantile(tau, [0.25, 0.5, 0.75, 0.9]) / TAU_QUANTILES
    assert np.all(np.abs(ratios - 1) < 0.15), ratios
    assert float(az.rhat(idata)["tau"]) < 1.02
    assert set(idata.posterior.data_vars) == {"mu", "tau", "theta"}
    assert np.all(np.asarray(idata.posterior["tau"]) > 0)


def test_neal_funnel_is_exact_in_both_samplers():
    # v ~ N(0, 3) exactly; before: DilationLangevin's sd of v 2.71, sample_dilation's v mean
    # -0.66, sd 2.43 and log Z 1.05 off (exact: 0).
    with _neal_funnel():
        idata = pm.sample(step=DilationLangevin(), random_seed=2, **SAMPLE)
        population = sample_dilation(draws=2000, random_seed=2, progressbar=False)
    for result in (idata, population):
        v = np.asarray(result.posterior["v"]).ravel()
        assert abs(v.mean()) < 0.15 * 3.0 and abs(v.std() / 3.0 - 1) < 0.1
    assert int(np.asarray(idata.sample_stats["diverging"]).sum()) == 0
    log_z = float(np.asarray(population.sample_stats["log_marginal_likelihood"]).mean())
    assert abs(log_z) < 0.2


def test_as_written_keeps_the_funnel():
    # The option off: the old behaviour, which PyMC's statistics flag (divergences or R-hat).
    with _eight_schools():
        idata = pm.sample(
            draws=500, tune=500, step=DilationLangevin(reparameterize=False), random_seed=1,
            **SAMPLE,
        )  # fmt: skip
    divergent = int(np.asarray(idata.sample_stats["diverging"]).sum())
    assert divergent > 50 or float(az.rhat(idata)["tau"]) > 1.05


def test_results_feed_the_workflow():
    # sample_dilation's result keeps the declared variables and says what was done; the
    # posterior predictive runs on it; an invalid option is refused.
    model = _hierarchy(4.0, 1)
    with model:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = sample_dilation(draws=500, random_seed=3, progressbar=False)
        assert "theta" in idata.posterior and "mu" in idata.posterior
        assert idata.sample_stats.attrs["centering"] == '{"theta": 0.0}'
        predictive = pm.sample_posterior_predictive(idata, progressbar=False, random_seed=1)
        with pytest.raises(ValueError, match="reparameterize must be True or False"):
            sample_dilation(reparameterize="yes")
        with pytest.raises(ValueError, match="reparameterize must be True or False"):
            DilationLangevin(reparameterize=1)
    from pymc_dilation._compat import group_dataset

    assert group_dataset(predictive, "posterior_predictive")["y"].shape[-1] == 12
