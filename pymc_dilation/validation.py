"""Checks of user options that raise clear ``ValueError`` messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["check_probability", "check_positive_int", "check_choice", "check_center"]


def check_probability(name: str, value: float) -> float:
    """``value`` as a float in the open interval ``(0, 1)``, or a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.")
    if not (0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {value!r}.")
    return float(value)


def check_positive_int(name: str, value: int, zero: bool = False) -> int:
    """``value`` as an int ``>= 1`` (``>= 0`` with ``zero=True``), or a ``ValueError``."""
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        kind = "a non-negative" if zero else "a positive"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}.")
    return int(value)


def check_choice(name: str, value, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, or a ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
    return value


def check_center(
    center: np.ndarray,
    logp_grad: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]],
    extra: np.ndarray,
    var_names: Sequence[str],
    dim: int,
) -> np.ndarray:
    """The center as a float vector with a finite log density and gradient, or a ``ValueError``.

    Parameters
    ----------
    center : numpy.ndarray
        Raveled center in unconstrained space.
    logp_grad : callable
        ``logp_grad(x, extra) -> (logp, grad)``.
    extra : numpy.ndarray
        Values of the variables not sampled.
    var_names : sequence of str
        Names of the sampled (value) variables, for the message.
    dim : int
        Expected length of the raveled center.
    """
    center = np.asarray(center, dtype=np.float64).ravel()
    if center.size != dim:
        raise ValueError(
            f"The center has {center.size} values but the sampled variables "
            f"({', '.join(var_names)}) have {dim} in unconstrained space."
        )
    if not np.all(np.isfinite(center)):
        raise ValueError("The center of the dilation path must be finite.")
    lp, grad = logp_grad(center, extra)
    if not (np.isfinite(lp) and np.all(np.isfinite(grad))):
        raise ValueError(
            f"The log density at the center of the dilation path is {lp} (variables "
            f"{', '.join(var_names)}); the path shrinks the posterior onto this point, so it must "
            "lie inside the support. Pass center={name: value} with values in unconstrained "
            "(transformed) space where the model's log density is finite, or set initvals on "
            "the model so that model.initial_point() is such a point."
        )
    return center


def check_bool(name: str, value) -> bool:
    """``value`` if it is a bool (Python or NumPy), or a ``ValueError``."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)
