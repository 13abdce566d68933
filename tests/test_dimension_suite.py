"""The dimension suite's generated targets: their exact posteriors and evidence are right."""

import numpy as np
import pytest

from benchmarks import dimension


def test_regression_posterior_and_evidence_are_exact():
    # log Z = log p(y | b) + log p(b) - log p(b | y) at any b; the model's own log density
    # gives the first two, the exact Gaussian posterior the third.
    name = "gauss_regression-d10-3"
    mean, cov = dimension.gauss_regression(name).posterior()
    model = dimension.build_model(name)
    logp = model.compile_logp()
    for b in (mean, mean + np.sqrt(np.diag(cov))):
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, b - mean)
        log_post = -0.5 * z @ z - np.log(np.diag(chol)).sum() - 0.5 * len(b) * np.log(2 * np.pi)
        assert logp({"beta": b}) - log_post == pytest.approx(dimension.log_evidence(name))


@pytest.mark.parametrize(
    "name, dim",
    [
        ("gauss_regression-d50-1", 50),
        ("hierarchical-g20-1", 45),
        pytest.param(
            "radon",
            175,
            marks=pytest.mark.skipif(
                not (dimension.DATA / "radon.csv").exists(), reason="../shared/data is absent"
            ),
        ),
    ],
)
def test_targets_have_the_sizes_they_are_named_for(name, dim):
    assert dimension.is_target(name)
    model = dimension.build_model(name)
    point = model.initial_point()
    assert sum(np.size(value) for value in point.values()) == dim
    assert not dimension.is_target("gauss_regression-1")
    assert np.isfinite(model.compile_logp()(point))
