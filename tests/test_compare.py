import sys
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr

from pymc_dilation import ComparisonResult, compare_with_nuts
from pymc_dilation.compare import _resolve_nuts_sampler, _shared_variables

matplotlib.use("Agg")

QUIET = dict(cores=1, progressbar=False, compute_convergence_checks=False)
STATS = ["mean", "sd", "ess_bulk", "ess_tail", "r_hat", "wall_time_s", "ess_per_s"]


@pytest.fixture(scope="module")
def normal_2d():
    """y_ij ~ N(mu_j, 1), mu_j ~ N(0, 1), j = 0, 1: posterior N(sum_i y_ij / (n + 1), 1/(n + 1))."""
    y = np.random.default_rng(3).normal([1.0, -2.0], 1.0, size=(10, 2))
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0, shape=2)
        pm.Normal("y", mu, 1.0, observed=y)
    n = y.shape[0]
    return model, y.sum(axis=0) / (n + 1), (n + 1) ** -0.5


@pytest.fixture(scope="module")
def comparison(normal_2d):
    model, _, _ = normal_2d
    return compare_with_nuts(
        draws=200, tune=200, chains=2, random_seed=7, model=model, nuts_sampler="pymc",
        sample_kwargs=QUIET,
    )  # fmt: skip


def test_results_are_what_pm_sample_returns(comparison, normal_2d):
    model, _, _ = normal_2d
    with model:
        reference = pm.sample(draws=5, tune=5, chains=1, nuts_sampler="pymc", **QUIET)
    assert isinstance(comparison, ComparisonResult)
    assert comparison.nuts_sampler == "pymc"
    assert type(comparison.dilation) is type(reference)
    assert type(comparison.nuts) is type(reference)
    assert "mode_index" in comparison.dilation.sample_stats
    assert "mode_index" not in comparison.nuts.sample_stats


def test_table_has_one_row_per_element_and_samplers_side_by_side(comparison):
    table = comparison.table
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == ["mu[0]", "mu[1]"]
    assert list(table.columns.get_level_values(0).unique()) == STATS
    assert list(table["mean"].columns) == ["dilation", "nuts"]
    assert np.all(np.isfinite(table.to_numpy()))
    assert (table["ess_bulk"] > 0).all().all() and (table["ess_tail"] > 0).all().all()
    assert (table["r_hat"] < 1.1).all().all()


def test_means_match_the_analytic_posterior(comparison, normal_2d):
    _, mean, sd = normal_2d
    for sampler in ("dilation", "nuts"):
        np.testing.assert_allclose(comparison.table["mean"][sampler], mean, atol=0.3 * sd)
        np.testing.assert_allclose(comparison.table["sd"][sampler], sd, rtol=0.2)


def test_wall_time_and_ess_per_second(comparison):
    timing = comparison.timing
    for sampler in ("dilation", "nuts"):
        wall = comparison.wall_time[sampler]
        assert wall > 0
        assert (comparison.table["wall_time_s"][sampler] == wall).all()
        expected = comparison.table["ess_bulk"][sampler].min() / wall
        assert comparison.ess_per_second[sampler] == pytest.approx(expected)
        assert timing.loc[sampler, "ess_per_s"] == pytest.approx(expected)


def test_repr_shows_the_table(comparison):
    text = repr(comparison)
    assert "DilationLangevin vs NUTS (pymc)" in text and "mu[1]" in text
    assert "<table" in comparison._repr_html_()


def test_plot_returns_a_figure(comparison):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    for var_names in (None, "mu"):
        fig = comparison.plot(var_names=var_names)
        assert isinstance(fig, Figure)
        assert len(fig.axes) >= 2
        plt.close(fig)


def test_default_variables_are_those_of_both_runs(comparison):
    assert comparison.var_names == ["mu"]
    # PyMC 5 with nutpie also stores the transformed values, which DilationLangevin's run lacks.
    dilation = SimpleNamespace(posterior=xr.Dataset({"mu": ("x", [0.0]), "s": ("x", [1.0])}))
    nuts = SimpleNamespace(posterior=xr.Dataset({"s_log__": ("x", [0.0]), "s": ("x", [1.0])}))
    assert _shared_variables(dilation, nuts) == ["s"]


def test_auto_falls_back_to_pymc_nuts_without_nutpie(monkeypatch, normal_2d):
    monkeypatch.setitem(sys.modules, "nutpie", None)  # makes `import nutpie` fail
    assert _resolve_nuts_sampler("auto") == "pymc"
    model, _, _ = normal_2d
    result = compare_with_nuts(
        draws=20, tune=20, chains=1, random_seed=1, model=model, sample_kwargs=QUIET,
        dilation_kwargs={"n_levels": 10},
    )  # fmt: skip
    assert result.nuts_sampler == "pymc"
    assert list(result.table.index) == ["mu[0]", "mu[1]"]


def test_nutpie_requested_but_missing_raises(monkeypatch, normal_2d):
    monkeypatch.setitem(sys.modules, "nutpie", None)
    with normal_2d[0], pytest.raises(ImportError, match="nutpie"):
        compare_with_nuts(draws=10, nuts_sampler="nutpie")


def test_nutpie_through_pm_sample(comparison, normal_2d):
    pytest.importorskip("nutpie")
    assert _resolve_nuts_sampler("auto") == "nutpie"
    model, _, _ = normal_2d
    result = compare_with_nuts(
        draws=50, tune=50, chains=1, random_seed=2, model=model, nuts_sampler="nutpie",
        sample_kwargs=QUIET, var_names="mu",
    )  # fmt: skip
    assert result.nuts_sampler == "nutpie"
    assert type(result.nuts) is type(comparison.nuts)
    assert "(nutpie)" in repr(result)


def test_bad_nuts_sampler_names_the_allowed_values(normal_2d):
    with normal_2d[0], pytest.raises(ValueError, match="'auto', 'pymc', 'nutpie'"):
        compare_with_nuts(nuts_sampler="stan")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"draws": 0},
        {"chains": 0},
        {"tune": -1},
        {"draws": 1.5},
        {"sample_kwargs": {"draws": 5}},
        {"sample_kwargs": {"return_inferencedata": False}},
        {"nuts_kwargs": {"step": None}},
        {"dilation_kwargs": "n_levels=10"},
        {"dilation_kwargs": {"model": None}},
    ],
)
def test_bad_input_raises_value_error(normal_2d, kwargs):
    with normal_2d[0], pytest.raises(ValueError):
        compare_with_nuts(**kwargs)
