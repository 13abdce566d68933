import pickle

import numpy as np
import pymc as pm
import pytest
from scipy.stats import ks_2samp

from pymc_dilation.model import compile_model_logp, prior_sampler


@pytest.fixture(scope="module")
def mixed_model():
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 2.0, shape=2)
        sigma = pm.HalfNormal("sigma", 1.0)
        k = pm.Poisson("k", 3.0)
        pm.Normal("y", mu.sum() + k, sigma, observed=[1.0, 2.0, 0.5])
    return model


@pytest.fixture(scope="module")
def compiled(mixed_model):
    return compile_model_logp(mixed_model)


def test_logp_and_gradient_match_pymc(mixed_model, compiled):
    point = mixed_model.initial_point()
    point.update(mu=np.array([0.3, -0.2]), sigma_log__=np.array(0.1), k=np.array(2))
    lp, grad = compiled.logp_grad(compiled.ravel(point), compiled.ravel_extra(point))
    assert lp == pytest.approx(mixed_model.compile_logp()(point))
    dlogp = mixed_model.compile_dlogp(vars=[mixed_model["mu"], mixed_model["sigma"]])
    np.testing.assert_allclose(grad, dlogp(point))


def test_discrete_variables_enter_as_extra(compiled):
    assert [info.name for info in compiled.var_infos] == ["mu", "sigma_log__"]
    assert [info.name for info in compiled.extra_infos] == ["k"]


def test_batch_matches_pointwise(compiled):
    rng = np.random.default_rng(0)
    xs, extra = rng.normal(size=(7, 3)), np.array([1.0])
    lps, grads = compiled.logp_grad_batch(xs, extra)
    for x, lp, grad in zip(xs, lps, grads):
        lp1, grad1 = compiled.logp_grad(x, extra)
        assert lp == pytest.approx(lp1)
        np.testing.assert_allclose(grad, grad1)


def test_c_backend_agrees_with_numba(mixed_model, compiled):
    c_compiled = compile_model_logp(mixed_model, backend="c")
    assert c_compiled.point_fn is None
    xs, extra = np.random.default_rng(1).normal(size=(4, 3)), np.array([2.0])
    for a, b in zip(c_compiled.logp_grad_batch(xs, extra), compiled.logp_grad_batch(xs, extra)):
        np.testing.assert_allclose(a, b)


def test_pickles_and_recompiles(compiled):
    clone = pickle.loads(pickle.dumps(compiled))
    x, extra = np.array([0.1, 0.2, 0.3]), np.array([1.0])
    assert clone.logp_grad(x, extra)[0] == pytest.approx(compiled.logp_grad(x, extra)[0])


def test_unravel_round_trip(mixed_model, compiled):
    point = mixed_model.initial_point()
    back = compiled.unravel(compiled.ravel(point))
    for name, value in back.items():
        np.testing.assert_allclose(value, point[name])


def test_errors_name_the_problem(mixed_model):
    with pytest.raises(ValueError, match="discrete"):
        compile_model_logp(mixed_model, vars=["k"])
    with pytest.raises(ValueError, match="backend"):
        compile_model_logp(mixed_model, backend="jax")
    with pm.Model() as discrete_only:
        pm.Poisson("n", 2.0)
    with pytest.raises(ValueError, match="has none"):
        compile_model_logp(discrete_only)


def test_prior_sampler_knows_priors_pymc_cannot_draw_before_compiling(monkeypatch):
    # Compiling a Flat prior's draw took Numba 0.3 s (object mode) on every call, only for
    # the draw to fail: 0.3 s of a 0.8 s pm.sample call on the kidiq regression.
    import pymc.pytensorf

    def drawable():
        with pm.Model() as model:
            pm.Normal("a", 0.0, 1.0, shape=2)
            pm.CustomDist(
                "b", 1.0, logp=lambda v, mu: -((v - mu) ** 2),
                random=lambda mu, rng=None, size=None: rng.normal(mu, size=size),
            )  # fmt: skip
            pm.CustomDist("c", 0.0, 2.0, dist=lambda mu, s, size: pm.Normal.dist(mu, s, size=size))
        return model

    model = drawable()
    draw = prior_sampler(model, compile_model_logp(model).var_infos)
    xs = draw(400, 1)
    assert xs.shape == (400, 4) and np.all(np.isfinite(xs))
    assert np.mean(xs[:, 2]) == pytest.approx(1.0, abs=0.2)  # b's own random
    assert np.std(xs[:, 3]) == pytest.approx(2.0, rel=0.2)  # c's symbolic dist

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(pymc.pytensorf, "compile", no_compile)
    # the same model again: its draw function is reused, with the same draws for a seed
    again = prior_sampler(model, compile_model_logp(model).var_infos)
    np.testing.assert_array_equal(again(400, 1), xs)
    for undrawable in (
        lambda: pm.Flat("x"),
        lambda: pm.HalfFlat("x"),
        lambda: pm.CustomDist("x", logp=lambda v: -(v**2)),
    ):
        with pm.Model() as model:
            pm.Normal("a")
            undrawable()
        assert prior_sampler(model, compile_model_logp(model).var_infos) is None


def test_prior_sampler_compiles_again_for_a_changed_model():
    with pm.Model() as model:
        pm.Normal("a", 0.0, 1.0)
    first = prior_sampler(model, compile_model_logp(model).var_infos)(5, 1)
    with model:
        pm.Normal("b", 10.0, 1.0, shape=2)
    xs = prior_sampler(model, compile_model_logp(model).var_infos)(200, 1)
    assert first.shape == (5, 1) and xs.shape == (200, 3)
    assert np.mean(xs[:, 1:]) == pytest.approx(10.0, abs=0.3)


def _hierarchy():
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        tau = pm.HalfNormal("tau", 1.0)
        pm.Normal("theta", mu, tau, shape=5)
    return model


def test_prior_draws_come_from_one_batched_call_and_follow_the_prior(monkeypatch):
    import pymc_dilation.model as model_module

    model = _hierarchy()
    xs = prior_sampler(model, compile_model_logp(model).var_infos)(4000, 3)
    assert model_module._PRIOR_DRAWS[model][3]  # batched
    # mu ~ N(0, 1); log tau with tau ~ HalfNormal(1); theta | mu, tau ~ N(mu, tau²):
    # var(theta) = 1 + E[tau²] = 2, cov(theta_i, theta_j) = var(mu) = 1.
    assert xs.shape == (4000, 7)
    assert np.std(xs[:, 0]) == pytest.approx(1.0, rel=0.05)
    np.testing.assert_allclose(np.var(xs[:, 2:], axis=0), 2.0, rtol=0.1)
    correlation = np.corrcoef(xs[:, 2:].T)[np.triu_indices(5, 1)]
    np.testing.assert_allclose(correlation, 0.5, atol=0.05)
    tau = np.exp(xs[:, 1])
    assert np.mean(tau) == pytest.approx(np.sqrt(2 / np.pi), rel=0.05)

    # The same law as one compiled call per draw (the fallback).
    def cannot_vectorize(*args, **kwargs):
        raise ValueError("not vectorizable")

    monkeypatch.setattr(model_module, "_batched_prior_draw", cannot_vectorize)
    looped_model = _hierarchy()
    looped = prior_sampler(looped_model, compile_model_logp(looped_model).var_infos)(4000, 4)
    assert not model_module._PRIOR_DRAWS[looped_model][3]
    for column in range(7):
        assert ks_2samp(xs[:, column], looped[:, column]).pvalue > 1e-3


def test_a_prior_pytensor_cannot_vectorize_is_drawn_one_call_a_draw():
    # A Gaussian random walk's innovations have a fixed size under a batched sigma, which
    # PyTensor's vectorization of random variables rejects (stochastic volatility's prior).
    import pymc_dilation.model as model_module

    with pm.Model() as model:
        sigma = pm.Exponential("sigma", 10.0)
        pm.GaussianRandomWalk("v", sigma=sigma, init_dist=pm.Normal.dist(0.0, 10.0), shape=20)
    xs = prior_sampler(model, compile_model_logp(model).var_infos)(300, 1)
    assert not model_module._PRIOR_DRAWS[model][3]
    assert xs.shape == (300, 21) and np.all(np.isfinite(xs))
    assert np.std(xs[:, 1]) == pytest.approx(10.0, rel=0.15)  # the walk's start
