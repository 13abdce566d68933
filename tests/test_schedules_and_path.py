import numpy as np
import pytest

from pymc_dilation.engine.path import (
    dilate,
    dilated_logp,
    dilated_score,
    rescale_between_levels,
    undilate,
)
from pymc_dilation.engine.schedules import (
    geometric_schedule,
    make_schedule,
    power_schedule,
    validate_schedule,
)


@pytest.mark.parametrize("make", [geometric_schedule, power_schedule])
def test_named_schedules_increase_to_one(make):
    levels = make(50, 1e-3)
    assert levels[0] == pytest.approx(1e-3)
    assert levels[-1] == 1.0
    assert np.all(np.diff(levels) > 0)


def test_geometric_has_equal_ratios():
    levels = geometric_schedule(10, 1e-4)
    np.testing.assert_allclose(levels[1:] / levels[:-1], levels[1] / levels[0])


@pytest.mark.parametrize(
    "levels, match",
    [
        ([0.1, 0.5, 0.9], "end at 1"),
        ([0.5, 0.1, 1.0], "strictly increasing"),
        ([0.0, 0.5, 1.0], r"\(0, 1\]"),
        ([0.5, 1.5], r"\(0, 1\]"),
        ([], "non-empty"),
        ([0.5, np.nan, 1.0], "finite"),
    ],
)
def test_invalid_schedules_are_rejected(levels, match):
    with pytest.raises(ValueError, match=match):
        validate_schedule(levels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": "cosine", "n_levels": 10, "lambda_min": 0.01}, "Unknown schedule"),
        ({"schedule": "geometric", "n_levels": 0, "lambda_min": 0.01}, "n_levels"),
        ({"schedule": "geometric", "n_levels": 10, "lambda_min": 1.0}, "lambda_min"),
        ({"schedule": "power", "n_levels": 10, "lambda_min": -1.0}, "lambda_min"),
    ],
)
def test_make_schedule_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(**kwargs)


def test_path_of_a_gaussian_is_the_shrunk_gaussian():
    # X ~ N(m, s^2 I) gives X_lam ~ N(c + sqrt(lam)(m - c), lam s^2 I).
    rng = np.random.default_rng(0)
    m, s, c, lam, d = np.array([2.0, -1.0]), 1.5, np.array([0.5, 0.5]), 0.2, 2
    x = rng.normal(size=(5, d))

    def gauss_logp(z, mean, sd):
        return -0.5 * np.sum(((z - mean) / sd) ** 2, axis=-1) - d * np.log(sd * np.sqrt(2 * np.pi))

    y = undilate(x, c, lam)
    target_grad = -(y - m) / s**2
    expected_mean, expected_sd = c + np.sqrt(lam) * (m - c), np.sqrt(lam) * s
    np.testing.assert_allclose(
        dilated_logp(gauss_logp(y, m, s), lam, d), gauss_logp(x, expected_mean, expected_sd)
    )
    np.testing.assert_allclose(
        dilated_score(target_grad, lam), -(x - expected_mean) / expected_sd**2
    )
    np.testing.assert_allclose(dilate(y, c, lam), x)


def test_rescale_between_levels_holds_the_path_point_fixed():
    c, y = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    moved = rescale_between_levels(y, c, 0.1, 0.4)
    np.testing.assert_allclose(dilate(moved, c, 0.4), dilate(y, c, 0.1))
