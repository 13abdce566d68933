import numpy as np
import pymc as pm
import pytest

from pymc_dilation import sample_dilation, sample_logdensity
from pymc_dilation.engine.population import PopulationTarget, refine_population

MEANS = np.array([[-5.0, 0.0], [5.0, 0.0]])
WEIGHTS = np.array([0.2, 0.8])


def mixture_logp_grad(ys):
    """Unit-variance 2-D mixture, weights 0.2/0.8 at (-5, 0) and (5, 0)."""
    diff = ys[:, None, :] - MEANS[None]
    comp = np.log(WEIGHTS) - 0.5 * (diff**2).sum(-1)
    top = comp.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(comp - top).sum(axis=1))
    resp = np.exp(comp - lse[:, None])
    return lse, -(resp[:, :, None] * diff).sum(axis=1)


def right_share(samples):
    return float((samples[:, 0] > 0).mean())


def test_sample_logdensity_recovers_mode_weights():
    result = sample_logdensity(mixture_logp_grad, 2, draws=1500, random_seed=0, n_levels=50)
    assert result.samples.shape == (1500, 2)
    assert abs(right_share(result.samples) - 0.8) < 0.03
    assert len(result.mode_centers[0]) == 2


def test_refinement_leaves_the_target_invariant():
    # Start from exact draws of the target; the refinement must keep their law.
    rng = np.random.default_rng(1)
    n = 4000
    labels = rng.uniform(size=n) < WEIGHTS[1]
    ys = MEANS[labels.astype(int)] + rng.normal(size=(n, 2))
    lps, grads = mixture_logp_grad(ys)
    target = PopulationTarget(2, mixture_logp_grad)
    refine_population(target, ys, lps, grads, rng, 0.5, 0.6, sweeps=30, steps=3)
    assert abs(right_share(ys) - 0.8) < 0.02
    np.testing.assert_allclose(ys[ys[:, 0] > 0].std(axis=0), 1.0, atol=0.05)


def test_refinement_corrects_wrong_weights():
    rng = np.random.default_rng(2)
    n = 3000
    labels = rng.uniform(size=n) < 0.5  # wrong: half in each mode
    ys = MEANS[labels.astype(int)] + rng.normal(size=(n, 2))
    lps, grads = mixture_logp_grad(ys)
    refine_population(PopulationTarget(2, mixture_logp_grad), ys, lps, grads, rng, 0.5, 0.6, 40, 3)
    assert abs(right_share(ys) - 0.8) < 0.03


def test_same_seed_same_samples():
    runs = [
        sample_logdensity(mixture_logp_grad, 2, draws=200, random_seed=5, n_levels=10).samples
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*runs)


def test_sample_dilation_on_a_pymc_model(conjugate_normal, draws_of):
    model, mean, sd = conjugate_normal
    with model:
        idata = sample_dilation(draws=1500, chains=2, random_seed=3, progressbar=False)
        reference = pm.sample(draws=10, tune=10, chains=1, progressbar=False)
    assert type(idata) is type(reference)
    assert np.asarray(idata.posterior["mu"]).shape == (2, 1500)
    draws = draws_of(idata, "mu")
    assert abs(draws.mean() - mean) < 0.1 * sd
    assert abs(draws.std() / sd - 1) < 0.1
    stats = idata.sample_stats
    for name in ("dilation", "step_size", "acceptance_rate", "divergences"):
        assert name in stats
    assert stats.attrs["n_grad"] > 0 and stats.attrs["sampling_time"] > 0


def test_sample_dilation_keeps_deterministics_and_constraints(draws_of):
    with pm.Model():
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Deterministic("var", sigma**2)
        idata = sample_dilation(draws=2000, random_seed=0, progressbar=False)
    sigma_draws = draws_of(idata, "sigma")
    assert np.all(sigma_draws > 0)
    np.testing.assert_allclose(draws_of(idata, "var"), sigma_draws**2)
    # HalfNormal(1): mean sqrt(2/pi), sd 0.603; 0.06 is 0.1 sd (4 Monte Carlo sd at 2000).
    assert abs(sigma_draws.mean() - np.sqrt(2 / np.pi)) < 0.06


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"draws": 0}, "draws"),
        ({"target_accept": 2.0}, "target_accept"),
        ({"schedule": [0.5, 0.2, 1.0]}, "increasing"),
        ({"refine_sweeps": -1}, "refine_sweeps"),
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
