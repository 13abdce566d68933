"""The dilation path between a Dirac at a center ``c`` and the target.

For ``lam`` in ``(0, 1]`` the path density is the law of ``c + sqrt(lam) (X - c)`` with
``X ~ pi``. Its log density and score follow in closed form from one evaluation of the
target at the *undilated* point ``y = c + (x - c) / sqrt(lam)``::

    log p_lam(x)      = log pi(y) - d/2 log(lam)
    grad log p_lam(x) = grad log pi(y) / sqrt(lam)

Every function here is compiled with Numba and broadcasts over leading axes, so it works on a
single point of shape ``(d,)`` or on a population of shape ``(n, d)``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "dilate",
    "undilate",
    "dilated_logp",
    "dilated_score",
    "rescale_between_levels",
]


@numba.njit(cache=True)
def dilate(y: np.ndarray, center: np.ndarray, lam: float) -> np.ndarray:
    """Map a target-space point ``y`` to the path at ``lam``: ``c + sqrt(lam) (y - c)``."""
    return center + np.sqrt(lam) * (y - center)


@numba.njit(cache=True)
def undilate(x: np.ndarray, center: np.ndarray, lam: float) -> np.ndarray:
    """Map a path point ``x`` at ``lam`` back to target space: ``c + (x - c) / sqrt(lam)``."""
    return center + (x - center) / np.sqrt(lam)


@numba.njit(cache=True)
def dilated_logp(target_logp, lam: float, dim: int):
    """Log density of the path at ``lam`` given the target log density at the undilated point.

    The ``-d/2 log(lam)`` term is the Jacobian of the dilation; it is what keeps the path
    normalised with the same constant as the target at every ``lam``.
    """
    return target_logp - 0.5 * dim * np.log(lam)


@numba.njit(cache=True)
def dilated_score(target_grad: np.ndarray, lam: float) -> np.ndarray:
    """Score of the path at ``lam`` given the target score at the undilated point."""
    return target_grad / np.sqrt(lam)


@numba.njit(cache=True)
def rescale_between_levels(
    y: np.ndarray, center: np.ndarray, lam_from: float, lam_to: float
) -> np.ndarray:
    """Express a fixed path point in the target coordinates of another level.

    A point ``x`` on the path has target coordinates ``y = c + (x - c)/sqrt(lam)``. Holding ``x``
    fixed while ``lam`` grows from ``lam_from`` to ``lam_to`` contracts ``y`` towards ``c`` by
    ``sqrt(lam_from / lam_to)``. This is the only place the annealing changes the state: at a fixed
    level, a Langevin step on ``p_lam`` with step ``eps * lam`` is exactly a Langevin step on the
    target with step ``eps`` in ``y`` coordinates.
    """
    return center + np.sqrt(lam_from / lam_to) * (y - center)
