"""The mode map: every distinct mode the particles reached, with a local Gaussian each.

1. **Ascent.** Each particle climbs by batched gradient ascent (a step size per particle,
   grown after an improvement and halved after a failure) towards the optimum of its basin.
2. **Merging by the hill–valley test.** Two optima belong to one mode when the log density along
   the segment between them never falls more than ``valley_depth`` nats below the lower end
   (Ursem's hill–valley test). The test needs no distance scale, so modes of any width, at any
   distance, merge or stay apart for the same reason: a barrier between them. Ascents that
   stopped short of the optimum (a flat ridge, a slow direction) still merge with their mode,
   since the log density rises monotonically towards a unimodal basin's optimum. Optima are
   visited from the highest log density down; each new mode takes every remaining optimum
   connected to it (one batched call per mode found), and there is no cap on the number of
   modes.
3. **Local Gaussians.** Each mode's location is polished by Newton steps and its covariance is
   the inverse negative Hessian there (see :mod:`pymc_dilation.engine.laplace`), as the
   Laplace approximation of that mode alone.

The map is a description, not a correction: which particle reached which mode, and a Gaussian
per mode for the importance sampling and the jumps of :mod:`pymc_dilation.engine.weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pymc_dilation.engine.laplace import laplace_approximation

__all__ = ["ModeMap", "ascend", "merge_optima", "map_modes", "VALLEY_DEPTH"]

BatchLogpGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

VALLEY_DEPTH = 1.0
"""Nats a segment may dip below its lower end and still join two optima into one mode.

Two equal unit Gaussians ``D`` standard deviations apart dip ``D²/8`` nats between their peaks,
so modes more than about three sds apart stay distinct; closer ones have no barrier worth the
name and the Langevin steps cross between them.
"""

_SEGMENT = np.linspace(0.0, 1.0, 7)[1:-1]


@dataclass(frozen=True)
class ModeMap:
    """Modes and their local Gaussians, in the coordinates of the density that was mapped.

    Attributes
    ----------
    locations : numpy.ndarray
        ``(K, d)`` optima, highest log density first.
    roots : numpy.ndarray
        ``(K, d, d)``; ``roots[k] @ roots[k].T`` is mode ``k``'s local covariance.
    logp : numpy.ndarray
        ``(K,)`` log density at each location.
    labels : numpy.ndarray
        ``(n,)`` mode index of each particle that was mapped.
    n_grad : int
        Gradient evaluations per particle spent on the map (ascent and merging), plus the
        Hessians' share.
    """

    locations: np.ndarray
    roots: np.ndarray
    logp: np.ndarray
    labels: np.ndarray
    n_grad: int

    @property
    def n_modes(self) -> int:
        """Number of modes ``K``."""
        return len(self.locations)

    @property
    def log_det_roots(self) -> np.ndarray:
        """``log |det roots[k]|``, half the log determinant of each local covariance."""
        return np.linalg.slogdet(self.roots)[1]

    def counts(self) -> np.ndarray:
        """Particles per mode at mapping time."""
        return np.bincount(self.labels, minlength=self.n_modes)


def ascend(
    logp_grad: BatchLogpGrad,
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    n_iter: int = 50,
    initial_rate: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Batched gradient ascent from every row of ``ys``; returns optima, log densities, calls.

    The rate of each particle grows by 1.2 after an improvement and halves otherwise, so it
    settles near the inverse curvature of the particle's own mode. Rows whose rate has
    collapsed stop being evaluated.
    """
    x, lp, g = ys.copy(), lps.copy(), grads.copy()
    rate = np.full(len(x), initial_rate)
    calls = 0
    for _ in range(n_iter):
        active = np.flatnonzero(rate > 1e-8)
        if active.size == 0:
            break
        x_new = x[active] + rate[active, None] * g[active]
        lp_new, g_new = logp_grad(x_new)
        calls += 1
        better = np.isfinite(lp_new) & np.all(np.isfinite(g_new), axis=1) & (lp_new >= lp[active])
        moved = active[better]
        x[moved], lp[moved], g[moved] = x_new[better], lp_new[better], g_new[better]
        rate[active] = np.where(better, rate[active] * 1.2, rate[active] * 0.5)
    return x, lp, calls


def _connected(logp_grad: BatchLogpGrad, top: np.ndarray, top_lp: float, xs, lps, depth):
    """Whether each row of ``xs`` reaches ``top`` along a segment with no valley deeper than
    ``depth`` below the lower of the two ends."""
    points = xs[:, None, :] + _SEGMENT[None, :, None] * (top - xs)[:, None, :]
    seg_lp, _ = logp_grad(points.reshape(-1, xs.shape[1]))
    seg_lp = np.where(np.isfinite(seg_lp), seg_lp, -np.inf).reshape(len(xs), len(_SEGMENT))
    floor = np.minimum(lps, top_lp) - depth
    return np.all(seg_lp >= floor[:, None], axis=1)


def merge_optima(
    logp_grad: BatchLogpGrad, optima: np.ndarray, lps: np.ndarray, depth: float = VALLEY_DEPTH
) -> tuple[np.ndarray, np.ndarray, int]:
    """Group optima into modes by the hill–valley test (see the module docstring).

    Returns the index of each mode's highest optimum ``(K,)``, the label of every optimum
    ``(n,)`` and the number of batched calls (one per mode).
    """
    n = len(optima)
    labels = np.full(n, -1)
    finite = np.isfinite(lps)
    heads = []
    calls = 0
    while True:
        open_ = np.flatnonzero((labels < 0) & finite)
        if open_.size == 0:
            break
        head = open_[np.argmax(lps[open_])]
        k = len(heads)
        heads.append(head)
        labels[head] = k
        rest = open_[open_ != head]
        if rest.size:
            joined = _connected(logp_grad, optima[head], lps[head], optima[rest], lps[rest], depth)
            labels[rest[joined]] = k
            calls += 1
    if not heads:  # no finite optimum at all: one mode at the best row
        heads, labels = [0], np.zeros(n, dtype=int)
    labels[labels < 0] = 0  # non-finite rows go with the highest mode; they carry no mass
    return np.asarray(heads), labels, calls


def map_modes(
    logp_grad: BatchLogpGrad,
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    depth: float = VALLEY_DEPTH,
    ascent_iter: int = 50,
) -> ModeMap:
    """The mode map of a population (see the module docstring).

    Parameters
    ----------
    logp_grad : callable
        Batched ``(n, d) -> ((n,), (n, d))``.
    ys, lps, grads : numpy.ndarray
        The particles, their log densities and gradients (not modified).
    depth : float
        See :data:`VALLEY_DEPTH`.
    ascent_iter : int
        Gradient-ascent iterations at most.
    """
    n, dim = ys.shape
    optima, opt_lp, calls = ascend(logp_grad, ys, lps, grads, ascent_iter)
    heads, labels, merge_calls = merge_optima(logp_grad, optima, opt_lp, depth)
    calls += merge_calls * len(_SEGMENT)
    locations, roots, mode_lp = [], [], []
    hessian_grads = 0
    for k, head in enumerate(heads):
        local = laplace_approximation(logp_grad, optima[head], max_iter=0, newton_steps=5)
        hessian_grads += local.n_grad
        members = optima[labels == k]
        location = local.mode
        if not local.converged:
            location = optima[head]
        lp_local = float(logp_grad(location[None])[0][0])
        if not (np.isfinite(lp_local) and lp_local >= opt_lp[head]):
            location, lp_local = optima[head], float(opt_lp[head])
        root = local.root
        if not local.converged and len(members) > dim:
            root = np.linalg.cholesky(np.cov(members.T) + 1e-9 * np.eye(dim))
        locations.append(location)
        roots.append(root)
        mode_lp.append(lp_local)
    return ModeMap(
        locations=np.asarray(locations),
        roots=np.asarray(roots),
        logp=np.asarray(mode_lp),
        labels=labels,
        n_grad=calls + -(-hessian_grads // max(n, 1)),
    )
