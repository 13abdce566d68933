"""Independent blocks of coordinates: a density that is a product of factors.

A density ``π(x) = Π_b π_b(x_b)`` whose factors each have several modes has as many modes as
the product of their counts: 16 independent double wells have 65 536, far more than any
population can map, and a map of the few hundred its particles reach weighs them wrongly (each
factor's right well 0.04-0.09 off, log Z 0.75-0.87 low, measured). Sampled factor by factor,
each has two modes, its weights and evidence are estimated on their own, and the product of
the factors' draws is a draw of the product (:func:`~pymc_dilation.engine.population.
run_population` does so).

Found numerically, so it works for any log density: the coordinates are linked where a cross
second derivative ``∂²log π / ∂x_i ∂x_j`` (central differences of the gradient) is not
negligible at any of a few points, the blocks are the connected parts of that graph, and the
split is accepted only if ``log π`` is additive across it at pairs of points
(:func:`is_additive`: ``log π(x) + log π(y) = log π(x_b, y_rest) + log π(y_b, x_rest)`` for
every block ``b``, which holds everywhere for a product and fails for almost every pair
otherwise). Evidence from a finite set of points, not a proof: a coupling that vanishes at all
of them (and only there) would be missed.

Blocks are worth separate runs only where they multiply modes: those whose optima (ascents
from a few centers) differ are sampled each on its own, all the others together
(:func:`factor_groups`). A Gaussian posterior is separable in whitened coordinates and is
never split.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "interaction_blocks",
    "is_additive",
    "factor_groups",
    "restricted",
    "BLOCKS_MAX_DIM",
    "COUPLING_RTOL",
]

BatchLogpGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

BLOCKS_MAX_DIM = 64
"""Largest dimension at which a density is tested for independent blocks (the test costs
``2 d`` gradient rows per point; the combined map lists every visited combination of the
factors' modes with a ``d × d`` covariance each)."""

COUPLING_RTOL = 1e-5
"""A cross second derivative links two coordinates when it exceeds this share of the
geometric mean of their diagonal ones (plus an absolute ``1e-8``): central differences of
step ``1e-4`` leave errors near ``1e-8`` on smooth densities."""

ADDITIVITY_RTOL = 1e-8
"""Relative tolerance of :func:`is_additive` on the log densities."""

FD_STEP = 1e-4
"""Central-difference step (the coordinates are whitened: scales about 1)."""

DISTINCT_OPTIMA = 0.1
"""Two ascents' optima differ in a block when their coordinates there are this far apart
(whitened units, about the posterior's sds; the ascents are run to about ``1e-4`` of their
optimum)."""


def interaction_blocks(logp_grad: BatchLogpGrad, points: np.ndarray) -> list[np.ndarray]:
    """The coordinates' connected blocks, linked by cross second derivatives at ``points``
    (central differences of the gradient; points where the density is not finite are
    skipped). One block when everything is linked."""
    points = np.atleast_2d(points)
    n, dim = points.shape
    steps = FD_STEP * np.eye(dim)
    rows = np.concatenate([points[:, None] + steps, points[:, None] - steps], axis=1)
    with np.errstate(all="ignore"):
        lps, grads = logp_grad(rows.reshape(-1, dim))  # every point's stencil in one call
    grads = np.asarray(grads).reshape(n, 2 * dim, dim)
    finite = np.all(np.isfinite(np.asarray(lps).reshape(n, -1)), axis=1)
    finite &= np.all(np.isfinite(grads), axis=(1, 2))
    linked = np.eye(dim, dtype=bool)
    for g in grads[finite]:
        hessian = (g[:dim] - g[dim:]) / (2.0 * FD_STEP)  # row j: ∂g/∂x_j
        hessian = 0.5 * (hessian + hessian.T)
        scale = np.sqrt(np.abs(np.outer(np.diag(hessian), np.diag(hessian))))
        linked |= np.abs(hessian) > COUPLING_RTOL * scale + 1e-8
    n_blocks, labels = connected_components(csr_matrix(linked), directed=False)
    return [np.flatnonzero(labels == b) for b in range(n_blocks)]


def is_additive(
    logp_grad: BatchLogpGrad, blocks: list[np.ndarray], xs: np.ndarray, ys: np.ndarray
) -> bool:
    """Whether ``log π(x) + log π(y) = log π(x_b, y_rest) + log π(y_b, x_rest)`` for every
    block ``b`` and every pair of rows of ``xs`` and ``ys`` where all four are finite (and
    at least one such pair)."""
    swapped_x, swapped_y = [], []
    for block in blocks:
        a, b = xs.copy(), ys.copy()
        a[:, block], b[:, block] = ys[:, block], xs[:, block]
        swapped_x.append(a)
        swapped_y.append(b)
    with np.errstate(all="ignore"):
        lp_x = logp_grad(xs)[0]
        lp_y = logp_grad(ys)[0]
        lp_a = logp_grad(np.concatenate(swapped_x))[0].reshape(len(blocks), -1)
        lp_b = logp_grad(np.concatenate(swapped_y))[0].reshape(len(blocks), -1)
    gap = np.abs(lp_x + lp_y - lp_a - lp_b)
    size = np.abs(lp_x) + np.abs(lp_y) + np.abs(lp_a) + np.abs(lp_b)
    pairs = np.all(np.isfinite(gap) & np.isfinite(size), axis=0)
    if not pairs.any():
        return False
    return bool(np.all(gap[:, pairs] <= ADDITIVITY_RTOL * size[:, pairs] + 1e-9))


def _distinct(values: np.ndarray) -> bool:
    """Whether the rows of ``values`` (finite ones) are not all within
    :data:`DISTINCT_OPTIMA` of the first."""
    values = values[np.all(np.isfinite(values), axis=1)]
    if len(values) < 2:
        return False
    return bool(np.any(np.max(np.abs(values - values[0]), axis=1) > DISTINCT_OPTIMA))


def factor_groups(
    logp_grad: BatchLogpGrad,
    blocks: list[np.ndarray],
    points: np.ndarray,
    optima: np.ndarray,
) -> list[np.ndarray] | None:
    """Groups of coordinates to sample separately, or None when splitting would not help.

    ``blocks`` come from :func:`interaction_blocks`; pairs of ``points`` (where the density
    is finite) serve the additivity test; ``optima`` are ascents' end points. Each block whose
    optima differ (it has several modes) is a group of its own, the other blocks one group
    together; None when fewer than two blocks have several modes, or the density is not
    additive across the blocks.
    """
    if len(blocks) < 2 or len(points) < 2:
        return None
    multimodal = [_distinct(optima[:, block]) for block in blocks]
    several = [block for block, many in zip(blocks, multimodal, strict=True) if many]
    if len(several) < 2:
        return None
    half = len(points) // 2
    if not is_additive(logp_grad, blocks, points[:half], points[half : 2 * half]):
        return None
    single = [block for block, many in zip(blocks, multimodal, strict=True) if not many]
    return several + ([np.sort(np.concatenate(single))] if single else [])


def restricted(logp_grad: BatchLogpGrad, block: np.ndarray, anchor: np.ndarray) -> BatchLogpGrad:
    """``log π`` as a function of the coordinates ``block`` alone, the others held at
    ``anchor``'s: for a product, the factor ``π_b`` times a constant."""

    def logp_grad_block(zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs = np.broadcast_to(anchor, (len(zs), len(anchor))).copy()
        xs[:, block] = zs
        lps, grads = logp_grad(xs)
        return lps, np.ascontiguousarray(np.asarray(grads)[:, block])

    return logp_grad_block
