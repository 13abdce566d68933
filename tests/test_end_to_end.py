"""The end-to-end benchmark's bookkeeping and the held-out regressions' exact moments."""

import numpy as np
import pytest

from benchmarks import end_to_end, regressions


def test_targets_expand_groups_and_accept_any_regression_seed():
    targets = end_to_end.expand_targets(["eight_schools", "ports", "corr_regression-17"])
    assert targets[0] == end_to_end.EIGHT_SCHOOLS
    assert len(targets) == 9  # eight schools once, seven other ports, one regression
    assert targets[-1] == "corr_regression-17"
    with pytest.raises(ValueError, match="corr_regression-<seed>"):
        end_to_end.expand_targets(["no_such_target"])


def test_regressions_are_reproducible_and_correlated():
    first = regressions.regression("corr_regression-5")
    regressions.regression.cache_clear()
    again = regressions.regression("corr_regression-5")
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.y, again.y)
    assert 5 <= first.dim <= 10 and np.all(first.x[:, 0] == 1.0)
    corr = np.corrcoef(first.x[:, 1:], rowvar=False)
    assert np.max(np.abs(corr[np.triu_indices_from(corr, 1)])) > 0.8


def test_flat_prior_reference_mean_is_least_squares():
    name = "corr_regression-1"
    reg = regressions.regression(name)
    assert reg.flat_prior
    ref = regressions.reference_moments(name)
    beta_hat = np.linalg.lstsq(reg.x, reg.y, rcond=None)[0]
    means = np.array([ref[f"beta[{i}]"][0] for i in range(reg.dim)])
    sds = np.array([ref[f"beta[{i}]"][1] for i in range(reg.dim)])
    np.testing.assert_allclose(means, beta_hat, atol=1e-6 * sds.max())
    assert ref["sigma"][0] == pytest.approx(reg.sigma_true, rel=0.3)


def test_ratios_and_failures_in_the_table():
    def fake_pair(target, sampler, settings, prime):
        if sampler == "nutpie":
            return {"target": target, "sampler": sampler, "not_run": "ImportError: nutpie"}
        speed = {"dilation": 30.0, "nuts": 10.0}[sampler]
        row = {"target": target, "sampler": sampler, "build_model_s": 0.1}
        for call in end_to_end.CALLS:
            row |= {f"{call}_wall_s": 1.0, f"{call}_ess_per_s": speed, f"{call}_n_grad": 5.0}
        return row

    rows = end_to_end.run(
        ["corr_regression-1"], ["dilation", "nuts", "nutpie"], end_to_end.Settings(),
        log=lambda _: None, pair=fake_pair,
    )  # fmt: skip
    assert rows[0]["cold_ess_per_s_vs_nuts"] == 3.0 and rows[0]["warm_ess_per_s_vs_nuts"] == 3.0
    assert "cold_ess_per_s_vs_nutpie" not in rows[0]
    table = end_to_end.markdown_table(rows)
    assert "ImportError: nutpie" in table and "3.00" in table


def test_trajectory_length_summary_averages_each_configuration_over_seeds():
    from benchmarks import trajectory_length

    def row(config, seed, bulk, wall):
        return {
            "target": "kidiq", "config": config, "seed": seed, "wall_s": wall,
            "min_ess_bulk": bulk, "min_ess_tail": bulk / 2, "n_grad": 4000.0,
            "mean_err": 0.05, "sd_err": 0.1,
        }  # fmt: skip

    rows = [row("uturn", 1, 1000, 1.0), row("uturn", 2, 3000, 1.0), row("chees", 1, 500, 0.5)]
    table = trajectory_length.summary_table(rows).splitlines()
    assert table[0] == "| posterior | uturn | chees |"
    cells = "| 2000 / 1000 (2.0; 0.050 / 0.100) | 1000 / 500 (2.0; 0.050 / 0.100) |"
    assert table[2] == "| kidiq " + cells
