"""Invalid inputs of the population sampler and its readers: each is refused up front.

``sample_dilation``, ``sample_logdensity``, ``mode_table`` and ``plot_modes`` (the step method
and ``compare_with_nuts`` are in tests/test_inputs_step.py). Every case asserts the exception
type and that the message names the option and what is allowed. The samplers' cases fail before
any sampling (the improper densities after the Laplace step, a few milliseconds).
"""

import matplotlib
import numpy as np
import pymc as pm
import pytest
from conftest import raises_with

from pymc_dilation import mode_table, plot_modes, sample_dilation, sample_logdensity

matplotlib.use("Agg")

SMALL = {"draws": 40, "n_levels": 3, "refine_sweeps": 2, "progressbar": False}


def gaussian(xs):
    return -0.5 * (xs**2).sum(axis=1), -xs


@pytest.fixture(scope="module")
def population(scale_model):
    with scale_model:
        return sample_dilation(random_seed=1, **SMALL)


@pytest.fixture(scope="module")
def logdensity_result():
    return sample_logdensity(gaussian, 2, random_seed=1, **SMALL)


INT = "positive integer"
UNIT = r"\(0, 1\)"
SEED = ["random_seed", "non-negative integer", "Generator"]
# Options both samplers share: (kwargs, fragments of the message).
SHARED = {
    "draws-zero": ({"draws": 0}, ["draws", INT]),
    "draws-float": ({"draws": 1.5}, ["draws", INT]),
    "draws-string": ({"draws": "100"}, ["draws", INT]),
    "chains-zero": ({"chains": 0}, ["chains", INT]),
    "chains-bool": ({"chains": True}, ["chains", INT]),
    "random_seed-string": ({"random_seed": "abc"}, SEED),
    "random_seed-negative": ({"random_seed": -1}, SEED),
    "random_seed-float": ({"random_seed": 1.5}, SEED),
    "random_seed-bool": ({"random_seed": True}, SEED),
    "progressbar-string": ({"progressbar": "yes"}, ["progressbar", "True or False"]),
    "progressbar-int": ({"progressbar": 2}, ["progressbar", "True or False"]),
    "center-unknown-string": ({"center": "middle"}, ["center must be", '"map"', "None"]),
    "center-map-capitalised": ({"center": "MAP"}, ["center must be", '"map"']),
    "center-map-without-laplace": (
        {"center": "map", "precondition": "none"},
        ['center="map"', 'precondition="laplace"'],
    ),
    "precondition-unknown": ({"precondition": "dense"}, ["precondition", "'laplace', 'none'"]),
    "precondition-none-object": ({"precondition": None}, ["precondition", "'laplace', 'none'"]),
    "schedule-unknown-name": ({"schedule": "linear"}, ["schedule", "geometric", "power"]),
    "schedule-number": ({"schedule": 5}, ["schedule must be", "geometric", "ending at 1"]),
    "schedule-decreasing": ({"schedule": [0.5, 0.2, 1.0]}, ["schedule", "increasing"]),
    "schedule-not-ending-at-1": ({"schedule": [0.1, 0.5]}, ["schedule", "end at 1"]),
    "schedule-strings": ({"schedule": ["a", "b"]}, ["schedule must be", "ending at 1"]),
    "schedule-zero-level": ({"schedule": [0.0, 0.5, 1.0]}, ["schedule", r"\(0, 1\]"]),
    "n_levels-zero": ({"n_levels": 0}, ["n_levels", INT]),
    "n_levels-float": ({"n_levels": 2.5}, ["n_levels", INT]),
    "lambda_min-zero": ({"lambda_min": 0.0}, ["lambda_min", UNIT]),
    "lambda_min-above-one": ({"lambda_min": 1.5}, ["lambda_min", UNIT]),
    "steps_per_level-zero": ({"steps_per_level": 0}, ["steps_per_level", INT]),
    "target_accept-one": ({"target_accept": 1.0}, ["target_accept", UNIT]),
    "target_accept-string": ({"target_accept": "0.6"}, ["target_accept", UNIT]),
    "anneal_metropolis-string": (
        {"anneal_metropolis": "no"},
        ["anneal_metropolis", "True or False"],
    ),
    "anneal_metropolis-int": ({"anneal_metropolis": 1}, ["anneal_metropolis", "True or False"]),
    "refine_sweeps-negative": ({"refine_sweeps": -1}, ["refine_sweeps", "non-negative integer"]),
    "refine_sweeps-float": ({"refine_sweeps": 2.0}, ["refine_sweeps", "non-negative integer"]),
    "refine_steps-zero": ({"refine_steps": 0}, ["refine_steps", INT]),
}

# Options of sample_dilation alone, in the scale_model.
DILATION = {
    "center-unknown-name": (
        {"center": {"nonexistent": 1.0}},
        ["center", "nonexistent", "allowed: 'mu', 'sigma', 'sigma_log__'"],
    ),
    "center-observed-name": ({"center": {"y": 1.0}}, ["center", "'y'", "allowed"]),
    "center-deterministic-name": ({"center": {"twice_mu": 1.0}}, ["center", "twice_mu"]),
    "center-both-spaces": ({"center": {"sigma": 2.0, "sigma_log__": 0.0}}, ["twice", "give one"]),
    "center-outside-support": ({"center": {"sigma": -1.0}}, [r"center\['sigma'\]", "support"]),
    "center-off-simplex": ({"center": {"w": [0.5, 0.5, 0.5]}}, ["center", "not a value w"]),
    "center-wrong-shape": ({"center": {"mu": [1.0, 2.0]}}, [r"center\['mu'\]", r"shape \(\)"]),
    "center-not-a-number": ({"center": {"mu": "one"}}, [r"center\['mu'\]", "number"]),
    "center-nan": ({"center": {"mu": np.nan}}, ["center", "finite"]),
    "center-array-length": ({"center": [0.0, 1.0]}, ["center has 2 values", "4 in unconstrained"]),
    "center-array-inf": ({"center": [0.0, np.inf, 0.0, 0.0]}, ["center", "finite"]),
    "center-key-not-a-name": ({"center": {3: 1.0}}, ["center keys", "names"]),
    "center-set": ({"center": {1.0, 2.0}}, ["center must be", "dict", "array"]),
    "model-not-a-model": ({"model": "my_model"}, ["model must be a pymc.Model", "str"]),
}

# Options of sample_logdensity alone (dimension 2, the density `gaussian` unless given).
LOGDENSITY = {
    "dim-zero": ({"dim": 0}, ["dim", INT]),
    "dim-float": ({"dim": 2.0}, ["dim", INT]),
    "dim-string": ({"dim": "2"}, ["dim", INT]),
    "center-length": ({"center": [0.0, 0.0, 0.0]}, ["center has 3 values", "have 2"]),
    "center-nan": ({"center": [np.nan, 0.0]}, ["center", "finite"]),
    "center-dict": ({"center": {"x": 1.0}}, ["center must be an array of dim values", "dict"]),
    "center-strings": ({"center": ["a", "b"]}, ["center must be an array", "numbers"]),
    "center-matrix": ({"center": [[0.0, 0.0]]}, ["center must be an array", "1-D"]),
    "logp-column": (
        {"logp_grad": lambda xs: (gaussian(xs)[0][:, None], gaussian(xs)[1])},
        ["logp_grad must return logp of shape", r"\(1,\)", r"returned shapes \(1, 1\)"],
    ),
    "grad-wrong-shape": (
        {"logp_grad": lambda xs: (gaussian(xs)[0], gaussian(xs)[1][:, :1])},
        ["grad of shape", r"\(1, 2\)", r"\(1, 1\)"],
    ),
    "grad-transposed": (
        {"logp_grad": lambda xs: (gaussian(xs)[0], gaussian(xs)[1].T)},
        ["grad of shape", r"\(1, 2\)", r"\(2, 1\)"],
    ),
    "scalar-return": ({"logp_grad": lambda xs: 0.0}, ["logp_grad must return a pair", "float"]),
    "triple-return": ({"logp_grad": lambda xs: (1, 2, 3)}, ["must return a pair", "tuple"]),
    "none-return": ({"logp_grad": lambda xs: None}, ["must return a pair", "NoneType"]),
    "non-numeric-return": (
        {"logp_grad": lambda xs: (["a"] * len(xs), -xs)},
        ["logp_grad must return float arrays", "not numeric"],
    ),
    "nan-at-center": (
        {"logp_grad": lambda xs: (np.full(len(xs), np.nan), -xs)},
        ["log density at the center", "nan", "Pass center="],
    ),
    "improper-flat": (
        {"logp_grad": lambda xs: (np.zeros(len(xs)), np.zeros_like(xs))},
        ["logp_grad looks improper", "does not fall", "finite integral"],
    ),
    "improper-one-direction": (
        {"logp_grad": lambda xs: (-0.5 * xs[:, 0] ** 2, np.stack([-xs[:, 0], 0 * xs[:, 1]], 1))},
        ["logp_grad looks improper", r"x\[1\]", "finite integral"],
    ),
    "improper-unbounded": (
        {"logp_grad": lambda xs: (xs.sum(axis=1), np.ones_like(xs))},
        ["logp_grad looks improper", "finite integral"],
    ),
}


def _dilation_call(model, kwargs):
    kwargs = {**SMALL, **kwargs}
    if "model" in kwargs:
        return lambda: sample_dilation(**kwargs)
    return lambda: sample_dilation(model=model, **kwargs)


def _logdensity_call(kwargs):
    kwargs = {**SMALL, "logp_grad": gaussian, "dim": 2, **kwargs}
    return lambda: sample_logdensity(**kwargs)


@pytest.mark.parametrize("kwargs, fragments", SHARED.values(), ids=SHARED.keys())
def test_sample_dilation_refuses_invalid_shared_options(scale_model, kwargs, fragments):
    raises_with(ValueError, _dilation_call(scale_model, kwargs), *fragments)


@pytest.mark.parametrize("kwargs, fragments", SHARED.values(), ids=SHARED.keys())
def test_sample_logdensity_refuses_invalid_shared_options(kwargs, fragments):
    raises_with(ValueError, _logdensity_call(kwargs), *fragments)


@pytest.mark.parametrize("kwargs, fragments", DILATION.values(), ids=DILATION.keys())
def test_sample_dilation_refuses_invalid_options(scale_model, kwargs, fragments):
    raises_with(ValueError, _dilation_call(scale_model, kwargs), *fragments)


@pytest.mark.parametrize("kwargs, fragments", LOGDENSITY.values(), ids=LOGDENSITY.keys())
def test_sample_logdensity_refuses_invalid_options(kwargs, fragments):
    message = raises_with(ValueError, _logdensity_call(kwargs), *fragments)
    assert "initvals" not in message and "model" not in message  # there is no model here


def test_a_log_density_that_is_not_callable_is_a_type_error():
    raises_with(TypeError, lambda: sample_logdensity("x**2", 2), "logp_grad must be a callable")


def test_unknown_keywords_are_type_errors_naming_them(scale_model):
    with scale_model:
        raises_with(TypeError, lambda: sample_dilation(tune=100, **SMALL), "'tune'")
    raises_with(TypeError, lambda: sample_logdensity(gaussian, 2, centre=[0, 0]), "'centre'")


def test_sample_dilation_without_a_model_or_free_variables_names_itself():
    raises_with(ValueError, lambda: sample_dilation(**SMALL), "sample_dilation needs a model")
    with pm.Model():
        pm.Normal("y", 0.0, 1.0, observed=[0.1, 0.2])
        raises_with(
            ValueError,
            lambda: sample_dilation(**SMALL),
            "^sample_dilation samples continuous",
            "no free variables",
        )


def test_an_improper_model_is_refused_naming_the_variable():
    with pm.Model():
        a = pm.Flat("a")
        b = pm.Flat("b")
        pm.Normal("y", a + b, 1.0, observed=[0.3, -0.2, 0.5])  # only a + b is identified
        raises_with(
            ValueError,
            lambda: sample_dilation(**SMALL),
            "posterior looks improper",
            r"a \(",
            "proper priors",
        )


# Readers of a result: (function, kwargs, fragments); `data` is the sample_dilation result
# unless the kwargs give one.
READERS = {
    "mode_table-data-int": (mode_table, {"data": 5}, ["mode_table reads", "int"]),
    "mode_table-data-dict": (mode_table, {"data": {}}, ["mode_table reads", "sample_stats"]),
    "mode_table-chain-out-of-range": (mode_table, {"chain": 5}, ["chain", "0..0", "5"]),
    "mode_table-chain-negative": (mode_table, {"chain": -1}, ["chain", "0..0"]),
    "mode_table-chain-string": (mode_table, {"chain": "0"}, ["chain", "integer"]),
    "mode_table-chain-float": (mode_table, {"chain": 0.0}, ["chain", "integer"]),
    "mode_table-location_columns-zero": (
        mode_table,
        {"location_columns": 0},
        ["location_columns", "positive integer"],
    ),
    "plot_modes-data-int": (plot_modes, {"data": 5}, ["plot_modes reads", "int"]),
    "plot_modes-var_names-unknown": (
        plot_modes,
        {"var_names": ["nonexistent"]},
        ["var_names", "nonexistent", "allowed: 'mu', 'sigma', 'w'"],
    ),
    "plot_modes-var_names-number": (plot_modes, {"var_names": 3}, ["var_names", "list of names"]),
    "plot_modes-var_names-empty": (plot_modes, {"var_names": []}, ["var_names", "empty"]),
    "plot_modes-chain-out-of-range": (plot_modes, {"chain": 5}, ["chain", "0..0"]),
    "plot_modes-chain-string": (plot_modes, {"chain": "0"}, ["chain", "integer"]),
    "plot_modes-max_modes-zero": (plot_modes, {"max_modes": 0}, ["max_modes", INT]),
    "plot_modes-max_panels-zero": (plot_modes, {"max_panels": 0}, ["max_panels", INT]),
    "plot_modes-bins-zero": (plot_modes, {"bins": 0}, ["bins", INT]),
    "plot_modes-bins-string": (plot_modes, {"bins": "auto"}, ["bins", INT]),
}


@pytest.mark.parametrize("fn, kwargs, fragments", READERS.values(), ids=READERS.keys())
def test_mode_readers_refuse_invalid_inputs(population, fn, kwargs, fragments):
    kwargs = {"data": population, **kwargs}
    raises_with(ValueError, lambda: fn(**kwargs), *fragments)


def test_mode_readers_name_what_a_pm_sample_result_lacks(scale_model):
    with scale_model:
        idata = pm.sample(draws=5, tune=5, chains=1, progressbar=False, random_seed=1)
    for fn in (mode_table, plot_modes):
        raises_with(
            ValueError, lambda fn=fn: fn(idata), f"{fn.__name__} reads the mode map", "mode_"
        )


def test_plot_modes_reads_a_sample_logdensity_result(logdensity_result):
    figure = plot_modes(logdensity_result, var_names="x[1]")
    assert [ax.get_title() for ax in figure.axes if ax.get_visible()] == ["x[1]"]
    raises_with(
        ValueError, lambda: plot_modes(logdensity_result, var_names="x"), r"allowed: 'x\[0\]'"
    )


def test_at_least_sixty_invalid_inputs_are_covered():
    cases = 2 * len(SHARED) + len(DILATION) + len(LOGDENSITY) + len(READERS)
    assert cases >= 60, cases
