"""Schedules of the dilation parameter ``lam``: increasing, in ``(0, 1]``, ending at 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "SCHEDULES",
    "geometric_schedule",
    "power_schedule",
    "make_schedule",
    "validate_schedule",
]

SCHEDULES = ("geometric", "power")


def _check_levels(n_levels: int, lambda_min: float) -> None:
    if not isinstance(n_levels, int | np.integer) or n_levels < 1:
        raise ValueError(f"n_levels must be a positive integer, got {n_levels!r}.")
    if not (np.isfinite(lambda_min) and 0.0 < lambda_min < 1.0):
        raise ValueError(f"lambda_min must lie in the open interval (0, 1), got {lambda_min!r}.")


def geometric_schedule(n_levels: int, lambda_min: float = 1e-3) -> np.ndarray:
    """Levels ``lambda_min * (1/lambda_min) ** (k / (n_levels - 1))``, from ``lambda_min`` to 1.

    Equal ratios between levels mean equal contractions of the state towards the center.

    Parameters
    ----------
    n_levels : int
        Number of levels, at least 1 (a single level is just ``[1.0]``).
    lambda_min : float
        First level, in ``(0, 1)``.

    Returns
    -------
    numpy.ndarray
        Increasing levels ending at exactly 1.
    """
    _check_levels(n_levels, lambda_min)
    if n_levels == 1:
        return np.ones(1)
    levels = np.geomspace(lambda_min, 1.0, n_levels)
    levels[-1] = 1.0
    return levels


def power_schedule(n_levels: int, lambda_min: float = 1e-3, power: float = 2.0) -> np.ndarray:
    """Levels ``lambda_min + (1 - lambda_min) * (k / (n_levels - 1)) ** power``.

    Parameters
    ----------
    n_levels : int
        Number of levels, at least 1.
    lambda_min : float
        First level, in ``(0, 1)``.
    power : float
        Exponent, positive; larger values spend more levels near ``lambda_min``.

    Returns
    -------
    numpy.ndarray
        Increasing levels ending at exactly 1.
    """
    _check_levels(n_levels, lambda_min)
    if not (np.isfinite(power) and power > 0):
        raise ValueError(f"power must be a positive number, got {power!r}.")
    if n_levels == 1:
        return np.ones(1)
    fractions = np.linspace(0.0, 1.0, n_levels) ** power
    return lambda_min + (1.0 - lambda_min) * fractions


def validate_schedule(levels: Sequence[float] | np.ndarray) -> np.ndarray:
    """Check a user-given schedule and return it as a float array.

    Raises
    ------
    ValueError
        Unless the levels are finite, strictly increasing, in ``(0, 1]`` and end at 1.
    """
    allowed = "'geometric', 'power' or an increasing array of levels in (0, 1] ending at 1"
    try:
        arr = np.asarray(levels, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"schedule must be {allowed}; got {levels!r}.") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"schedule must be {allowed} (a non-empty 1-D sequence); got {levels!r}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"schedule levels must be finite ({allowed}); got {levels!r}.")
    if arr[0] <= 0.0 or arr[-1] > 1.0:
        raise ValueError(
            f"schedule levels must lie in (0, 1]; got levels from {arr[0]!r} to {arr[-1]!r}."
        )
    if np.any(np.diff(arr) <= 0.0):
        raise ValueError(f"schedule must be strictly increasing ({allowed}).")
    if arr[-1] != 1.0:
        raise ValueError(f"schedule must end at 1 (the target); it ends at {arr[-1]!r}.")
    return arr


def make_schedule(
    schedule: str | Sequence[float] | np.ndarray,
    n_levels: int,
    lambda_min: float,
    power: float = 2.0,
) -> np.ndarray:
    """Build a schedule from a name (``"geometric"`` or ``"power"``) or validate a user array.

    Parameters
    ----------
    schedule : str or array_like
        ``"geometric"``, ``"power"`` or explicit levels.
    n_levels : int
        Number of levels for a named schedule (ignored for an explicit array).
    lambda_min : float
        First level for a named schedule (ignored for an explicit array).
    power : float
        Exponent of the power schedule.

    Returns
    -------
    numpy.ndarray
        The validated levels.
    """
    if isinstance(schedule, str):
        if schedule == "geometric":
            return geometric_schedule(n_levels, lambda_min)
        if schedule == "power":
            return power_schedule(n_levels, lambda_min, power)
        raise ValueError(
            f"Unknown schedule {schedule!r}: schedule must be one of {SCHEDULES} or an "
            "increasing array of levels in (0, 1] ending at 1."
        )
    return validate_schedule(schedule)
