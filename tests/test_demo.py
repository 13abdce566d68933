"""The demo's pieces that need no sampling: the exact posterior, the table, the command line."""

import numpy as np
import pytest

from pymc_dilation.__main__ import build_parser
from pymc_dilation.demo import (
    SamplerRun,
    build_model,
    format_table,
    posterior_mixture,
    true_density,
)


def test_exact_posterior_is_a_normalised_mixture_with_the_stated_weights():
    weights, means, var = posterior_mixture()
    np.testing.assert_allclose(weights, [0.2, 0.8])
    np.testing.assert_allclose(means, [[-500 / 101, 0], [500 / 101, 0]])
    assert var == pytest.approx(100 / 101)
    grid = np.linspace(-15, 15, 3001)
    assert np.trapezoid(true_density(grid), grid) == pytest.approx(1.0, abs=1e-6)
    g0, g1 = np.meshgrid(grid[::10], grid[::10])
    step = grid[10] - grid[0]
    assert true_density(g0, g1).sum() * step**2 == pytest.approx(1.0, abs=1e-4)


def test_model_log_density_matches_the_exact_posterior_up_to_a_constant():
    model = build_model()
    logp = model.compile_logp()
    points = np.array([[-5.0, 0.3], [4.0, -1.0], [0.0, 0.0], [6.0, 2.0]])
    model_lp = np.array([logp({"x": p}) for p in points])
    exact_lp = np.log(true_density(points[:, 0], points[:, 1]))
    diff = model_lp - exact_lp
    np.testing.assert_allclose(diff, diff[0], atol=1e-8)


def test_table_reports_weights_and_chain_counts():
    rng = np.random.default_rng(0)
    draws = np.concatenate(
        [rng.normal([5, 0], 1, size=(3, 100, 2)), rng.normal([-5, 0], 1, size=(1, 100, 2))]
    )
    run = SamplerRun("fake", draws, sampling_time=2.0, wall_time=3.0)
    assert run.weight_right == pytest.approx(0.75, abs=0.01)
    assert run.chains_right == 3
    table = format_table([run])
    assert "fake" in table and "3/4" in table and "0.800" in table


def test_command_line():
    args = build_parser().parse_args(["demo", "--output", "out", "--fast"])
    assert (args.command, args.output, args.fast) == ("demo", "out", True)
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
