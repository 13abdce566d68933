"""Newton steps without Hessians: truncated Newton (Newton–CG) ascent, batched over rows.

:func:`~pymc_dilation.engine.laplace.newton_polish` builds each row's Hessian from ``2d``
gradients and factorises it, once per Newton step: ``O(d)`` gradients and ``O(d³)`` work a
step, whether the row ends on a mode or on a slope. Here each step solves the Newton system by
conjugate gradients, with Hessian–vector products from central differences of the gradient
(two gradients each), stopped after :data:`CG_ITERATIONS` products, at a small residual, or at
a direction of non-negative curvature (Steihaug's rule). A step costs at most
``2 · CG_ITERATIONS`` gradients a row, whatever ``d``.

Conjugate gradients on a positive definite system give, after any number of iterations, a
lower bound on ``gᵀ A⁻¹ g`` (the squared Newton decrement): a row whose bound stays large
after the steps is, for certain, not at an optimum. That is what the mode map needs first
(stochastic volatility, 252 parameters: 10 ascents that had stalled on the funnel's curved
slopes, each polished by 6 Hessians to a decrement of 1–117 and then dropped, 0.27 s of a
chain's 0.55 s tuning population); the few rows that do end on an optimum get their Hessian
there, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "TruncatedNewton",
    "truncated_newton",
    "halved_steps",
    "CG_ITERATIONS",
    "hessian_free_pays",
]

BatchLogpGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

CG_ITERATIONS = 20
"""Hessian–vector products at most per Newton step and row."""
CG_TOLERANCE = 0.1
"""Relative residual ``|g - A p| / |g|`` at which a row's conjugate gradients stop (less near
an optimum: ``√|g|`` when smaller)."""


def hessian_free_pays(dim: int, newton_steps: int) -> bool:
    """Whether :func:`truncated_newton` costs fewer gradients than Newton steps with Hessians
    (``2d`` gradients each, plus the one at the end) by at least half."""
    return 2 * CG_ITERATIONS * newton_steps * 2 <= 2 * dim * (newton_steps + 1)


class TruncatedNewton(NamedTuple):
    """Where :func:`truncated_newton` ended, per row.

    Attributes
    ----------
    points, lps, grads : numpy.ndarray
        ``(k, d)`` end points, ``(k,)`` log densities and ``(k, d)`` gradients.
    decrement : numpy.ndarray
        ``(k,)`` conjugate gradients' estimate of the squared Newton decrement ``gᵀ A⁻¹ g``
        at the last step taken (``A`` the negative Hessian): a lower bound where ``A`` is
        positive definite; ``inf`` where a direction of non-negative curvature was met (no
        optimum's neighbourhood) and for rows without finite density.
    calls : int
        Gradient evaluations, all rows together.
    """

    points: np.ndarray
    lps: np.ndarray
    grads: np.ndarray
    decrement: np.ndarray
    calls: int


def _hessian_times(logp_grad: BatchLogpGrad, xs, vs) -> tuple[np.ndarray, int]:
    """``A v`` (``A`` the negative Hessian) at each row of ``xs`` for its row of ``vs``, by
    central differences of the gradient along the unit direction, in one batched call."""
    norms = np.linalg.norm(vs, axis=1)
    units = vs / np.where(norms > 0, norms, 1.0)[:, None]
    h = 1e-5 * np.maximum(1.0, np.max(np.abs(xs), axis=1))
    stencil = np.concatenate([xs + h[:, None] * units, xs - h[:, None] * units])
    with np.errstate(all="ignore"):
        _, grads = logp_grad(stencil)
    grads = np.asarray(grads, dtype=float)
    k = len(xs)
    return -(grads[:k] - grads[k:]) / (2.0 * h[:, None]) * norms[:, None], 2 * k


def _newton_directions(logp_grad, xs, grads, iterations: int):
    """Conjugate gradients for ``A p = g`` at each row (Steihaug's truncation). Returns the
    directions, the decrement estimates ``gᵀ p`` (inf where the curvature was not positive
    along a search direction) and the gradients spent."""
    k, _ = xs.shape
    p = np.zeros_like(grads)
    residual = grads.copy()
    search = residual.copy()
    rr = np.einsum("ki,ki->k", residual, residual)
    # the forcing term min(0.1, √|g|): superlinear convergence near an optimum
    stop = np.sqrt(rr) * np.minimum(CG_TOLERANCE, rr**0.25)
    active = rr > 0
    flat = np.zeros(k, dtype=bool)
    calls = 0
    for _ in range(iterations):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        a_s, spent = _hessian_times(logp_grad, xs[rows], search[rows])
        calls += spent
        curvature = np.einsum("ki,ki->k", search[rows], a_s)
        bad = ~(np.isfinite(curvature) & (curvature > 0))
        # Non-positive curvature: no optimum's neighbourhood. The direction so far (or the
        # gradient, before any) is still an ascent direction for the line search.
        first = bad & ~np.any(p[rows] != 0, axis=1)
        p[rows[first]] = grads[rows[first]]
        flat[rows[bad]] = True
        active[rows[bad]] = False
        rows, a_s, curvature = rows[~bad], a_s[~bad], curvature[~bad]
        alpha = rr[rows] / curvature
        p[rows] += alpha[:, None] * search[rows]
        residual[rows] -= alpha[:, None] * a_s
        rr_new = np.einsum("ki,ki->k", residual[rows], residual[rows])
        done = np.sqrt(rr_new) <= stop[rows]
        search[rows] = residual[rows] + (rr_new / rr[rows])[:, None] * search[rows]
        rr[rows] = rr_new
        active[rows[done]] = False
    decrement = np.einsum("ki,ki->k", grads, p)
    decrement[flat] = np.inf
    return p, decrement, calls


def halved_steps(logp_grad: BatchLogpGrad, points, lps, grads, rows, step, halvings: int):
    """Take each row's ``step`` from ``points[rows]``, halved until the log density does not
    fall (a finite log density and gradient), at most ``halvings`` times; ``points``, ``lps``
    and ``grads`` are updated in place. Returns the rows that found no such step and the
    evaluations spent."""
    calls = 0
    for _ in range(halvings):
        if rows.size == 0:
            break
        candidates = points[rows] + step
        with np.errstate(all="ignore"):
            cand_lp, cand_grad = logp_grad(candidates)
        cand_lp = np.asarray(cand_lp, dtype=float)
        cand_grad = np.asarray(cand_grad, dtype=float)
        calls += rows.size
        better = np.isfinite(cand_lp) & np.all(np.isfinite(cand_grad), axis=1)
        better &= cand_lp >= lps[rows]
        took = rows[better]
        points[took], lps[took], grads[took] = (
            candidates[better], cand_lp[better], cand_grad[better]
        )  # fmt: skip
        rows, step = rows[~better], step[~better] / 2.0
    return rows, calls


def truncated_newton(
    logp_grad: BatchLogpGrad,
    starts: np.ndarray,
    newton_steps: int = 5,
    iterations: int = CG_ITERATIONS,
    halvings: int = 30,
) -> TruncatedNewton:
    """Truncated Newton ascent from every row of ``starts`` at once (see the module docstring).

    Each of at most ``newton_steps`` steps: a direction by conjugate gradients (at most
    ``iterations`` Hessian–vector products), then halved until it improves the log density
    (at most ``halvings`` times; a row with no improvement stops). A row stops when its
    decrement estimate falls below ``1e-10``.
    """
    points = np.asarray(starts, dtype=float).copy()
    k, _ = points.shape
    with np.errstate(all="ignore"):
        lps, grads = logp_grad(points)
    lps = np.asarray(lps, dtype=float).copy()
    grads = np.asarray(grads, dtype=float).copy()
    finite = np.isfinite(lps) & np.all(np.isfinite(grads), axis=1)
    lps[~finite], grads[~finite] = -np.inf, 0.0
    calls = k
    decrement = np.full(k, np.inf)
    active = finite.copy()
    for _ in range(newton_steps):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        step, decrement[rows], spent = _newton_directions(
            logp_grad, points[rows], grads[rows], iterations
        )
        calls += spent
        converged = decrement[rows] < 1e-10
        active[rows[converged]] = False
        rows, step = rows[~converged], step[~converged]
        rows, spent = halved_steps(logp_grad, points, lps, grads, rows, step, halvings)
        calls += spent
        active[rows] = False  # no improvement after every halving: stop there
    # the estimate at the end point, for the rows that moved on their last step
    moved = np.flatnonzero(finite & active)
    if moved.size:
        _, decrement[moved], spent = _newton_directions(
            logp_grad, points[moved], grads[moved], iterations
        )
        calls += spent
    return TruncatedNewton(points, lps, grads, decrement, calls)
