"""Mode occupancy of DilationLangevin chains: the table, the picture and the check."""

import warnings

import matplotlib
import numpy as np
import pymc as pm
import pytest
from conftest import bimodal_model

from pymc_dilation import (
    DilationLangevin,
    check_mode_maps,
    mode_occupancy,
    plot_mode_occupancy,
    sample_dilation,
)
from pymc_dilation.diagnostics import UnreliableResultWarning

matplotlib.use("Agg")
SAMPLE = dict(chains=4, cores=1, progressbar=False, compute_convergence_checks=False)


def _run(mode_jumps: bool, seed: int, chains: int = 4):
    with bimodal_model(weight=0.5, left=-4.0, right=8.0):
        return pm.sample(
            step=DilationLangevin(mode_jumps=mode_jumps), random_seed=seed, draws=400,
            tune=300, **{**SAMPLE, "chains": chains},
        )  # fmt: skip


@pytest.fixture(scope="module")
def mixing():
    return _run(True, 1)


def test_occupancy_table_has_a_row_per_chain_and_mode(mixing):
    table = mode_occupancy(mixing)
    assert list(table.index.names) == ["chain", "mode"]
    assert len(table) == 8
    shares = table["share"].groupby(level="chain").sum()
    np.testing.assert_allclose(shares, 1.0)
    assert np.all(table["draws"] > 0) and np.all(table["jump_acceptance"] > 0.3)
    assert np.all((table["weight"] > 0.3) & (table["weight"] < 0.7))


def test_chains_that_mix_raise_no_warning(mixing):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableResultWarning)
        assert check_mode_maps(mixing) == []


def test_chains_stuck_in_their_modes_are_warned_about():
    stuck = _run(False, 3, chains=8)  # 8 chains of equal modes: all in one has odds 1/128
    shares = (np.asarray(stuck.posterior["x"]) > 2.0).mean(axis=1)
    assert 0 < shares.mean() < 1  # chains in both modes, each in one
    with pytest.warns(UnreliableResultWarning, match="not mixed"):
        problems = check_mode_maps(stuck)
    assert len(problems) == 1


def test_plot_has_two_panels(mixing):
    axes = plot_mode_occupancy(mixing)
    assert len(axes) == 2
    assert axes[0].get_title() and axes[1].get_title()


def test_population_results_are_refused_with_a_pointer_to_mode_table():
    with bimodal_model():
        idata = sample_dilation(200, random_seed=1, progressbar=False)
    with pytest.raises(ValueError, match="mode_table"):
        mode_occupancy(idata)


@pytest.mark.parametrize("tolerance", [0.0, 1.0, -0.1])
def test_tolerance_must_be_a_probability(mixing, tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        check_mode_maps(mixing, tolerance=tolerance)
