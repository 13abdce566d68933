"""Invalid inputs of ``DilationLangevin`` and ``compare_with_nuts``: each is refused up front.

Every case asserts the exception type and that the message names the option and what is
allowed. None of them compiles or samples anything (they fail before), so they are quick.
"""

import numpy as np
import pymc as pm
import pytest
from conftest import raises_with

from pymc_dilation import DilationLangevin, compare_with_nuts
from pymc_dilation.centers import resolve_center

# (kwargs of DilationLangevin, fragments the message must contain: the option, what is allowed)
STEP_CASES = {
    "center-unknown-name": (
        {"center": {"nonexistent": 1.0}},
        ["center", "nonexistent", "allowed: 'mu', 'sigma', 'sigma_log__'"],
    ),
    "center-observed-name": ({"center": {"y": 1.0}}, ["center", "'y'", "allowed"]),
    "center-deterministic-name": ({"center": {"twice_mu": 1.0}}, ["center", "twice_mu", "allowed"]),
    "center-both-spaces": (
        {"center": {"sigma": 2.0, "sigma_log__": 0.0}},
        ["center", "twice", "give one"],
    ),
    "center-outside-support": (
        {"center": {"sigma": -1.0}},
        [r"center\['sigma'\]", "outside the support"],
    ),
    "center-off-simplex": (
        {"center": {"w": [0.5, 0.5, 0.5]}},
        [r"center\['w'\]", "not a value w can take"],
    ),
    "center-wrong-shape": (
        {"center": {"mu": [1.0, 2.0]}},
        [r"center\['mu'\]", r"shape \(2,\)", r"shape \(\)"],
    ),
    "center-not-a-number": ({"center": {"mu": "one"}}, [r"center\['mu'\]", "number"]),
    "center-nan": ({"center": {"mu": np.nan}}, ["center", "finite"]),
    "center-string": ({"center": "middle"}, ["center must be a dict", "array", "None"]),
    "center-array-length": (
        {"center": [0.0, 1.0]},
        ["center has 2 values", "4 in unconstrained space"],
    ),
    "center-array-inf": ({"center": [0.0, np.inf, 0.0, 0.0]}, ["center", "finite"]),
    "center-key-not-a-name": ({"center": {3: 1.0}}, ["center keys", "names"]),
    "anneal_metropolis-string": (
        {"anneal_metropolis": "no"},
        ["anneal_metropolis", "True or False"],
    ),
    "anneal_metropolis-int": ({"anneal_metropolis": 0}, ["anneal_metropolis", "True or False"]),
    "blocked-string": ({"blocked": "yes"}, ["blocked", "True or False"]),
    "max_rank-negative": ({"max_rank": -1}, ["max_rank", "non-negative integer"]),
    "max_rank-float": ({"max_rank": 2.5}, ["max_rank", "non-negative integer"]),
    "rng-string": ({"rng": "abc"}, ["rng", "non-negative integer", "Generator"]),
    "rng-negative": ({"rng": -1}, ["rng", "non-negative integer"]),
    "rng-float": ({"rng": 1.5}, ["rng", "non-negative integer"]),
    "rng-randomstate": ({"rng": np.random.RandomState(1)}, ["rng", "Generator"]),
    "target_accept-high": ({"target_accept": 1.5}, ["target_accept", r"\(0, 1\)"]),
    "target_accept-string": ({"target_accept": "0.6"}, ["target_accept", r"\(0, 1\)"]),
    "target_accept-nan": ({"target_accept": np.nan}, ["target_accept", r"\(0, 1\)"]),
    "lambda_min-zero": ({"lambda_min": 0.0}, ["lambda_min", r"\(0, 1\)"]),
    "lambda_min-string": ({"lambda_min": "small"}, ["lambda_min", r"\(0, 1\)"]),
    "n_levels-zero": ({"n_levels": 0}, ["n_levels", "positive integer"]),
    "n_levels-float": ({"n_levels": 10.5}, ["n_levels", "positive integer"]),
    "steps_per_draw-bool": ({"steps_per_draw": True}, ["steps_per_draw", "positive integer"]),
    "initial_step-negative": ({"initial_step": -0.1}, ["initial_step", "> 0"]),
    "initial_step-string": ({"initial_step": "big"}, ["initial_step", "positive number"]),
    "initial_step-inf": ({"initial_step": np.inf}, ["initial_step", "finite"]),
    "tune-negative": ({"tune": -5}, ["tune", "non-negative integer"]),
    "backend-unknown": ({"backend": "jax"}, ["backend", "'numba', 'c'"]),
    "schedule-unknown-name": ({"schedule": "linear"}, ["schedule", "geometric", "power"]),
    "schedule-number": ({"schedule": 5}, ["schedule must be", "geometric", "ending at 1"]),
    "schedule-decreasing": ({"schedule": [0.5, 0.2, 1.0]}, ["schedule", "increasing"]),
    "schedule-not-ending-at-1": ({"schedule": [0.1, 0.5]}, ["schedule", "end at 1"]),
    "schedule-strings": ({"schedule": ["a", "b"]}, ["schedule must be", "ending at 1"]),
    "vars-unknown-name": ({"vars": ["nonexistent"]}, ["vars", "nonexistent", "'mu', 'sigma'"]),
    "vars-number": ({"vars": 3}, ["vars", "free variables or their names"]),
    "vars-observed": ({"vars": ["y"]}, ["vars", "'y'", "free variables"]),
    "model-not-a-model": ({"model": "my_model"}, ["model must be a pymc.Model", "str"]),
    "vars-empty": ({"vars": []}, ["vars is empty", "free variables"]),
    "rng-with-blocked-false": ({"blocked": False, "rng": "abc"}, ["rng", "Generator"]),
}


@pytest.mark.parametrize("kwargs, fragments", STEP_CASES.values(), ids=STEP_CASES.keys())
def test_dilation_langevin_refuses_invalid_options(scale_model, kwargs, fragments):
    with scale_model:
        raises_with(ValueError, lambda: DilationLangevin(**kwargs), *fragments)


def test_an_unknown_keyword_is_a_type_error_as_python_raises(scale_model):
    with scale_model:
        raises_with(TypeError, lambda: DilationLangevin(centre={"mu": 1.0}), "centre")


def test_no_model_names_the_function_called():
    raises_with(ValueError, DilationLangevin, "DilationLangevin needs a model", "with model")
    raises_with(ValueError, compare_with_nuts, "compare_with_nuts needs a model", "with model")


@pytest.mark.parametrize("fn", [DilationLangevin, compare_with_nuts])
def test_a_model_without_free_variables_names_the_function_called(fn):
    with pm.Model():
        pm.Normal("y", 0.0, 1.0, observed=[0.1, 0.2])
        raises_with(ValueError, fn, f"^{fn.__name__} samples continuous", "no free variables")


def test_a_model_with_only_discrete_variables_names_them():
    with pm.Model():
        pm.Poisson("n", 3.0)
        raises_with(ValueError, compare_with_nuts, "^compare_with_nuts", "only discrete", "'n'")


# (kwargs of compare_with_nuts, exception, fragments of the message)
COMPARE_CASES = {
    "random_seed-string": (
        {"random_seed": "abc"},
        ValueError,
        ["random_seed", "non-negative integer", "one per chain"],
    ),
    "random_seed-negative": (
        {"random_seed": -3},
        ValueError,
        ["random_seed", "non-negative integer"],
    ),
    "random_seed-bool": (
        {"random_seed": True},
        ValueError,
        ["random_seed", "non-negative integer"],
    ),
    "random_seed-wrong-count": (
        {"random_seed": [1, 2, 3], "chains": 2},
        ValueError,
        ["random_seed has 3 seeds", "2 chains"],
    ),
    "draws-zero": ({"draws": 0}, ValueError, ["draws", "positive integer"]),
    "draws-float": ({"draws": 1.5}, ValueError, ["draws", "positive integer"]),
    "chains-zero": ({"chains": 0}, ValueError, ["chains", "positive integer"]),
    "tune-negative": ({"tune": -1}, ValueError, ["tune", "non-negative integer"]),
    "nuts_sampler-unknown": (
        {"nuts_sampler": "stan"},
        ValueError,
        ["nuts_sampler", "'auto', 'pymc', 'nutpie'"],
    ),
    "model-not-a-model": ({"model": 42}, ValueError, ["model must be a pymc.Model", "int"]),
    "var_names-unknown": (
        {"var_names": ["nonexistent"]},
        ValueError,
        ["var_names", "nonexistent", "allowed: 'mu', 'sigma', 'w', 'twice_mu'"],
    ),
    "var_names-observed": ({"var_names": "y"}, ValueError, ["var_names", "'y'", "allowed"]),
    "var_names-number": ({"var_names": 3}, ValueError, ["var_names", "list of names"]),
    "unknown-keyword": (
        {"progress_bar": False},
        TypeError,
        ["unexpected keyword argument 'progress_bar'", "progressbar"],
    ),
    "dilation-option-typed-directly": (
        {"n_levels": 50},
        TypeError,
        ["'n_levels'", r"dilation_kwargs=\{'n_levels'"],
    ),
    "step-keyword": ({"step": None}, ValueError, ["step", "compare_with_nuts sets it"]),
    "progressbar-number": ({"progressbar": 3}, ValueError, ["progressbar", "True, False"]),
    "cores-zero": ({"cores": 0}, ValueError, ["cores", "positive integer"]),
    "compute_convergence_checks-string": (
        {"compute_convergence_checks": "no"},
        ValueError,
        ["compute_convergence_checks", "True or False"],
    ),
    "target_accept-high": ({"target_accept": 1.2}, ValueError, ["target_accept", r"\(0, 1\)"]),
    "return_inferencedata-false": (
        {"return_inferencedata": False},
        ValueError,
        ["return_inferencedata", "must be True"],
    ),
    "given-twice": (
        {"cores": 1, "sample_kwargs": {"cores": 2}},
        ValueError,
        ["cores given both", "once"],
    ),
    "sample_kwargs-not-a-dict": (
        {"sample_kwargs": ["cores", 1]},
        ValueError,
        ["sample_kwargs must be a dict"],
    ),
    "sample_kwargs-reserved": (
        {"sample_kwargs": {"draws": 5}},
        ValueError,
        ["sample_kwargs may not set draws"],
    ),
    "sample_kwargs-unknown-key": (
        {"sample_kwargs": {"colors": 1}},
        ValueError,
        ["sample_kwargs has unknown keys 'colors'", "allowed: .*progressbar"],
    ),
    "sample_kwargs-bad-value": (
        {"sample_kwargs": {"cores": -2}},
        ValueError,
        [r"cores \(in sample_kwargs\)", "positive integer"],
    ),
    "sample_kwargs-return_inferencedata": (
        {"sample_kwargs": {"return_inferencedata": False}},
        ValueError,
        ["return_inferencedata", "must be True"],
    ),
    "nuts_kwargs-reserved": (
        {"nuts_kwargs": {"step": None}},
        ValueError,
        ["nuts_kwargs may not set step"],
    ),
    "nuts_kwargs-unknown-key": (
        {"nuts_kwargs": {"max_depth": 5}},
        ValueError,
        ["nuts_kwargs has unknown keys 'max_depth'", "max_treedepth"],
    ),
    "nuts_kwargs-bad-target": (
        {"nuts_kwargs": {"target_accept": 0.0}},
        ValueError,
        [r"target_accept \(in nuts_kwargs\)", r"\(0, 1\)"],
    ),
    "dilation_kwargs-string": (
        {"dilation_kwargs": "n_levels=10"},
        ValueError,
        ["dilation_kwargs must be a dict"],
    ),
    "dilation_kwargs-model": (
        {"dilation_kwargs": {"model": None}},
        ValueError,
        ["dilation_kwargs may not set model"],
    ),
    "dilation_kwargs-rng": (
        {"dilation_kwargs": {"rng": 1}},
        ValueError,
        ["dilation_kwargs may not set rng"],
    ),
    "dilation_kwargs-unknown-key": (
        {"dilation_kwargs": {"levels": 10}},
        ValueError,
        ["dilation_kwargs has unknown keys 'levels'", "n_levels"],
    ),
    "dilation_kwargs-bad-value": (
        {"dilation_kwargs": {"anneal_metropolis": "no"}},
        ValueError,
        ["anneal_metropolis", "True or False"],
    ),
    "dilation_kwargs-bad-center": (
        {"dilation_kwargs": {"center": {"nonexistent": 1}}},
        ValueError,
        ["center", "nonexistent", "allowed"],
    ),
}


@pytest.mark.parametrize("kwargs, exc, fragments", COMPARE_CASES.values(), ids=COMPARE_CASES.keys())
def test_compare_with_nuts_refuses_invalid_options(scale_model, kwargs, exc, fragments):
    with scale_model:
        kwargs = {"nuts_sampler": "pymc", **kwargs}
        raises_with(exc, lambda: compare_with_nuts(**kwargs), *fragments)


def test_seeds_per_chain_are_refused_up_front_when_nuts_is_nutpie(scale_model, monkeypatch):
    # pm.sample hands nutpie one seed and fails on a list, after DilationLangevin has run.
    monkeypatch.setattr("pymc_dilation.compare._nutpie_available", lambda: True)
    with scale_model:
        raises_with(
            ValueError,
            lambda: compare_with_nuts(chains=2, random_seed=[1, 2], nuts_sampler="nutpie"),
            "random_seed must be None, one non-negative integer",
            "nutpie",
        )


def test_at_least_seventy_invalid_inputs_are_covered():
    assert len(STEP_CASES) + len(COMPARE_CASES) >= 70


# ---------------------------------------------------------------------- centers that work


def test_a_constrained_center_is_transformed_like_initvals(scale_model):
    names = [v.name for v in scale_model.value_vars]
    assert names == ["mu", "sigma_log__", "w_simplex__"]
    by_rv = resolve_center(scale_model, {"sigma": 50.0, "mu": 1.0}, names)
    by_value = resolve_center(scale_model, {"sigma_log__": np.log(50.0), "mu": 1.0}, names)
    np.testing.assert_allclose(by_rv, by_value, rtol=1e-12)
    assert by_rv[:2] == pytest.approx([1.0, np.log(50.0)])
    # What PyMC makes of the same values given as initvals:
    from pymc.initial_point import make_initial_point_fn

    initvals = {"sigma": 50.0, "mu": 1.0}
    point = make_initial_point_fn(model=scale_model, overrides=initvals, jitter_rvs=set())(0)
    np.testing.assert_allclose(by_rv, np.concatenate([np.ravel(point[n]) for n in names]))


def test_the_step_method_centers_at_either_form(scale_model):
    w = [0.2, 0.3, 0.5]
    simplex = scale_model.rvs_to_transforms[scale_model["w"]]
    w_simplex = simplex.forward(np.array(w)).eval()
    with scale_model:
        by_rv = DilationLangevin(center={"sigma": 50.0, "w": w})
        by_value = DilationLangevin(center={"sigma_log__": np.log(50.0), "w_simplex__": w_simplex})
    np.testing.assert_allclose(by_rv.center, by_value.center, rtol=1e-9)
    assert by_rv.center[1] == pytest.approx(np.log(50.0))
    # Names not given keep the model's initial point; the default center is that point.
    assert by_rv.center[0] == 0.0


def test_a_transform_whose_bounds_depend_on_another_variable_uses_the_center():
    with pm.Model() as model:
        pm.HalfNormal("s", 1.0)
        pm.Uniform("u", lower=0.0, upper=model["s"])
    names = ["s_log__", "u_interval__"]
    center = resolve_center(model, {"s": 4.0, "u": 1.0}, names)
    # u = 1 in (0, 4) is a quarter of the way up: logit(1/4).
    np.testing.assert_allclose(center, [np.log(4.0), np.log(0.25 / 0.75)], rtol=1e-12)
    mixed = resolve_center(model, {"s_log__": np.log(4.0), "u": 1.0}, names)
    np.testing.assert_allclose(mixed, center, rtol=1e-12)


def test_a_scalar_is_broadcast_and_an_array_center_is_taken_as_is():
    with pm.Model() as model:
        pm.Normal("m", 0.0, 1.0, shape=3)
    np.testing.assert_array_equal(resolve_center(model, {"m": 2.0}, ["m"]), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(resolve_center(model, [1, 2, 3], ["m"]), [1.0, 2.0, 3.0])


def test_the_sample_keywords_a_user_types_reach_pm_sample(scale_model, monkeypatch):
    """``progressbar=``, ``cores=`` go to both runs, ``target_accept`` to NUTS only."""
    calls = []

    def fake_sample(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(pm, "sample", fake_sample)
    with scale_model, pytest.raises(RuntimeError, match="stop"):
        compare_with_nuts(
            draws=10, tune=10, chains=1, nuts_sampler="pymc", progressbar=False, cores=1,
            target_accept=0.9, dilation_kwargs={"n_levels": 5},
        )  # fmt: skip
    (dilation_call,) = calls
    assert dilation_call["progressbar"] is False and dilation_call["cores"] == 1
    assert "target_accept" not in dilation_call
    assert isinstance(dilation_call["step"], DilationLangevin)


def test_nuts_gets_target_accept_and_sample_kwargs_still_work(scale_model, monkeypatch):
    calls = []

    def fake_sample(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise RuntimeError("stop")
        return None

    monkeypatch.setattr(pm, "sample", fake_sample)
    with scale_model, pytest.raises(RuntimeError, match="stop"):
        compare_with_nuts(
            draws=10, tune=10, chains=1, nuts_sampler="pymc", target_accept=0.9,
            sample_kwargs={"progressbar": False}, dilation_kwargs={"n_levels": 5},
        )  # fmt: skip
    dilation_call, nuts_call = calls
    assert dilation_call["progressbar"] is False and nuts_call["progressbar"] is False
    assert nuts_call["target_accept"] == 0.9 and "step" not in nuts_call


@pytest.mark.parametrize("cores", [1, 2])
def test_a_start_without_finite_log_density_is_an_error_at_the_start(cores):
    # A negative scale as initial value: every draw used to be NaN, with only PyMC's
    # divergence count to show for it; NUTS raises SamplingError at the start.
    with pm.Model():
        s = pm.HalfNormal("s", 1.0)
        pm.Normal("y", 0.0, s, observed=np.linspace(-2.0, 2.0, 20))
        # SamplingError in one process; PyMC's ParallelSamplingError carrying it in several
        with pytest.raises(Exception, match="starting point failed"):
            pm.sample(
                step=DilationLangevin(), initvals={"s": -1.0}, draws=20, tune=20, chains=2,
                cores=cores, progressbar=False, compute_convergence_checks=False,
            )  # fmt: skip
