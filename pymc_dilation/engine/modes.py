"""The mode map: every distinct mode the particles reached, with a local Gaussian each.

1. **Ascent.** Each particle climbs by batched L-BFGS ascent (curvature pairs and a step size
   per particle, see :func:`ascend`) towards the optimum of its basin.
2. **Merging by the hill–valley test.** Two optima belong to one mode when the log density along
   the segment between them never falls more than ``valley_depth`` nats below the lower end
   (Ursem's hill–valley test). The test needs no distance scale, so modes of any width, at any
   distance, merge or stay apart for the same reason: a barrier between them. Ascents that
   stopped short of the optimum (a flat ridge, a slow direction) still merge with their mode,
   since the log density rises monotonically towards a unimodal basin's optimum. Optima are
   visited from the highest log density down, each tested against its nearest mode (one
   batched call per mode found), and there is no cap on the number of modes. The modes'
   optima are then polished by Newton steps and merged once more by the same test, which
   joins the stray heads of ascents that stopped on a curved slope. The valley is not all:
   an optimum beyond the 0.99 quantile of a higher optimum's Laplace Gaussian (both polished
   to optima, :data:`OPTIMUM_DECREMENT`) is a mode of its own however shallow the valley
   between them, since one Gaussian cannot describe both (a narrow peak beside a wide bump;
   see :func:`map_modes`).
3. **Local Gaussians.** Each mode's location is polished by Newton steps. Its local Gaussian
   has the mean and covariance of the particles in the mode's bulk (log density within
   :func:`bulk_depth` of the peak) when there are enough of them to estimate a covariance
   that importance sampling survives (:func:`moment_particles`: ``max(2d + 10, d²)``), and is
   the Laplace approximation (the inverse negative Hessian at the optimum, see
   :mod:`pymc_dilation.engine.laplace`) otherwise. The particles' spread describes a skewed
   mode far better than the curvature at its peak: on eight schools the Laplace Gaussian gave
   importance weights with Pareto k̂ 1.34, the particles' Gaussian 0.52; in high dimension
   the curvature is the better of the two (see :func:`moment_particles`).

The map is a description, not a correction: which particle reached which mode, and a Gaussian
per mode for the importance sampling and the jumps of :mod:`pymc_dilation.engine.weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numba
import numpy as np
from scipy.stats import chi2

from pymc_dilation.engine.adaptation import shrunk_root
from pymc_dilation.engine.hessian_free import hessian_free_pays, truncated_newton
from pymc_dilation.engine.laplace import newton_polish, root_inverse, root_log_det

__all__ = [
    "ModeMap",
    "Ascent",
    "ascend",
    "merge_optima",
    "map_modes",
    "add_modes",
    "known_optimum",
    "moment_match",
    "VALLEY_DEPTH",
    "RIDGE_DECREMENT",
    "OPTIMUM_DECREMENT",
]

BatchLogpGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

VALLEY_DEPTH = 1.0
"""Nats a segment may dip below its lower end and still join two optima into one mode.

Two equal unit Gaussians ``D`` standard deviations apart dip ``D²/8`` nats between their peaks,
so modes more than about three sds apart stay distinct; closer ones have no barrier worth the
name and the Langevin steps cross between them.
"""

ASCENT_TOL = 1e-2
"""Nats a gradient-ascent step must gain for the ascent to go on (see :func:`ascend`). On a
Gaussian mode in whitened coordinates a step gains less than that only within about 0.15 sd
of the optimum; farther from it, the hill–valley test and the Newton polish of
:func:`map_modes` do the rest."""

_SEGMENT = np.linspace(0.0, 1.0, 7)[1:-1]

RIDGE_DECREMENT = 1.0
"""Squared Newton decrement ``gᵀ Σ g`` above which a polished optimum is no mode: after every
Newton step (see :func:`map_modes`) the local Gaussian still puts the optimum more than one of
its sds away. Real modes polish to 0 (below 0.03 at every optimum of the 2-D and 10-D mixture
suites, the sign-ambiguous regression and the Flat-prior bimodal model). Measured above it:
non-centered eight schools, points where ascents stopped on the ridge towards ``tau`` → ∞,
3e7 (their Gaussians took the importance weight, and 23 of 1000 reported draws had ``tau`` up
to 3e8); stochastic volatility (252 parameters), 4–9 points on its curved slopes, 2–400, which
the probe took for modes, so the tuning population annealed (time to the first draw 50 s with
a threshold of 100, 23 s with 1); a three-component NormalMixture, degenerate optima (a
component's sd going to 0 on one datum), median 6 (its chains' shares are the same with
either threshold)."""


OPTIMUM_DECREMENT = 1e-4
"""Squared Newton decrement at or below which a polished point is an optimum whose curvature
is known (within 0.01 sd of its local Gaussian's peak), so that its Laplace bulk can keep
another optimum out of its mode (see :func:`merge_optima`). Newton steps converge
quadratically at a real optimum (decrement 0 on the 10-D mixtures); on a curved ridge they
stop short of it (0.003-0.3 on a banana), and such points are judged by the valley alone."""


@dataclass(frozen=True)
class ModeMap:
    """Modes and their local Gaussians, in the coordinates of the density that was mapped.

    Attributes
    ----------
    locations : numpy.ndarray
        ``(K, d)`` optima, highest log density first.
    means : numpy.ndarray
        ``(K, d)`` centers of the local Gaussians.
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
    means: np.ndarray
    roots: np.ndarray
    logp: np.ndarray
    labels: np.ndarray
    n_grad: int

    @property
    def n_modes(self) -> int:
        """Number of modes ``K``."""
        return len(self.locations)

    def counts(self) -> np.ndarray:
        """Particles per mode at mapping time."""
        return np.bincount(self.labels, minlength=self.n_modes)

    @cached_property
    def inverse_roots(self) -> np.ndarray:
        """``(K, d, d)`` inverses of :attr:`roots`, computed once per map (the proposals built
        from one map while it is weighed, and the known-mode tests, share them: at d = 1005
        each inversion took about 0.1 s, nine of them per tuning population)."""
        return root_inverse(self.roots)


POLISH_STEPS = 5
"""Newton steps at most that polish each mode's optimum (see :func:`_polish`)."""

ASCENT_MEMORY = 6
"""Curvature pairs each row's L-BFGS ascent keeps (see :func:`ascend`)."""
KNOWN_ASCENT_ITER = 100
"""Ascent iterations at most before points are judged to climb to known modes (see
:func:`_in_known_modes`): a row stops as soon as a step gains less than :data:`ASCENT_TOL`, so
only points still climbing use them. On a 1005-parameter hierarchy one of 16 heavy importance
draws was still 153 nats below the mode after 20 iterations, outside its Gaussian's bulk, and
polishing the draws' own optimum cost 6 Hessians (12 000 gradients) to find the known mode."""


@numba.njit(cache=True)
def _lbfgs_directions(g, s, y, rho, newest, count, rows):
    """The L-BFGS two-loop recursion for the rows ``rows``: ``H g[r]`` with ``H`` the inverse
    (negative) Hessian estimate from row ``r``'s curvature pairs. ``s, y`` (``(n, m, d)``) and
    ``rho`` (``(n, m)``) are ring buffers, ``newest[r]`` the slot of the row's newest pair and
    ``count[r]`` how many it holds; a row with no pair gets ``g[r]`` itself. A loop over the
    rows in place of NumPy's gathers of every row's pairs (six ``(n, d)`` copies an
    iteration, more than the model's gradients at d = 1005)."""
    m = s.shape[1]
    out = np.empty((rows.size, g.shape[1]))
    alpha = np.empty(m)
    for i in range(rows.size):
        r = rows[i]
        q = g[r].copy()
        k = count[r]
        for j in range(k):
            slot = (newest[r] - j) % m
            alpha[j] = rho[r, slot] * np.dot(s[r, slot], q)
            q -= alpha[j] * y[r, slot]
        if k > 0:
            slot = newest[r]
            yy = np.dot(y[r, slot], y[r, slot])
            if yy > 0.0:
                q *= np.dot(s[r, slot], y[r, slot]) / yy
        for j in range(k - 1, -1, -1):
            slot = (newest[r] - j) % m
            beta = rho[r, slot] * np.dot(y[r, slot], q)
            q += (alpha[j] - beta) * s[r, slot]
        out[i] = q
    return out


class Ascent(NamedTuple):
    """Where a batched ascent ended.

    Attributes
    ----------
    points, lps : numpy.ndarray
        ``(n, d)`` end points and ``(n,)`` their log densities.
    calls : int
        Rows evaluated, as a share of all rows (gradients per row).
    climbing : numpy.ndarray
        ``(n,)`` whether a row was still gaining at least the tolerance per step when the
        iterations ran out (not at an optimum yet).
    """

    points: np.ndarray
    lps: np.ndarray
    calls: int
    climbing: np.ndarray


def ascend(
    logp_grad: BatchLogpGrad,
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    n_iter: int = 20,
    initial_rate: float = 0.5,
    tol: float = ASCENT_TOL,
    max_rows: int | None = None,
) -> Ascent:
    """Batched L-BFGS ascent from every row of ``ys`` (see :class:`Ascent`).

    Each row keeps its own :data:`ASCENT_MEMORY` curvature pairs, so it climbs as fast in an
    ill-conditioned mode as in a round one: plain gradient steps took hundreds of iterations
    in a 100-D mode whose correlations the whitening did not know (condition number ~300),
    and ascents stopped after 20 of them were merged, by the hill–valley test, with the other
    mode (one mode found of two). Before a row has a pair it takes gradient steps whose rate
    grows by 1.2 after an improvement and halves otherwise; after, unit L-BFGS steps, halved
    after a failure and doubled (up to 1) after a success. Only improving steps are taken.
    Rows whose step has collapsed, or whose last step gained less than ``tol`` nats, stop
    being evaluated. With ``max_rows``, the ascent also stops once that many rows have been
    evaluated in all (a budget that rows ending early leave to those still climbing).
    """
    x, lp, g = ys.copy(), lps.copy(), grads.copy()
    n, dim = x.shape
    s_pairs = np.zeros((n, ASCENT_MEMORY, dim))
    y_pairs = np.zeros((n, ASCENT_MEMORY, dim))
    rho = np.zeros((n, ASCENT_MEMORY))
    newest = np.full(n, ASCENT_MEMORY - 1)
    count = np.zeros(n, dtype=np.int64)
    rate = np.full(n, initial_rate)
    rows = 0
    for _ in range(n_iter):
        active = np.flatnonzero(rate > 0.0)
        if active.size == 0:
            break
        direction = _lbfgs_directions(g, s_pairs, y_pairs, rho, newest, count, active)
        x_new = x[active] + rate[active, None] * direction
        lp_new, g_new = logp_grad(x_new)
        rows += active.size
        better = np.isfinite(lp_new) & np.all(np.isfinite(g_new), axis=1) & (lp_new >= lp[active])
        with np.errstate(invalid="ignore"):  # -inf - -inf where neither point has density
            settled = better & (lp_new - lp[active] < tol)
        moved = active[better]
        step = x_new[better] - x[moved]
        change = g[moved] - g_new[better]  # the gradient change of -log p: positive curvature
        curvature = np.einsum("nd,nd->n", step, change)
        paired = curvature > 1e-12 * np.linalg.norm(step, axis=1) * np.linalg.norm(change, axis=1)
        had_pairs = count[moved] > 0
        upd = moved[paired]
        newest[upd] = (newest[upd] + 1) % ASCENT_MEMORY
        s_pairs[upd, newest[upd]] = step[paired]
        y_pairs[upd, newest[upd]] = change[paired]
        rho[upd, newest[upd]] = 1.0 / curvature[paired]
        count[upd] = np.minimum(count[upd] + 1, ASCENT_MEMORY)
        x[moved], lp[moved], g[moved] = x_new[better], lp_new[better], g_new[better]
        # A row's first pair switches it from gradient steps to unit L-BFGS steps.
        first_pair = np.isin(active, moved[paired & ~had_pairs])
        grown = np.where(count[active] > 0, np.minimum(rate[active] * 2.0, 1.0), rate[active] * 1.2)
        grown[first_pair] = 1.0
        rate[active] = np.where(better, grown, rate[active] * 0.5)
        rate[active[settled | (rate[active] <= 1e-8)]] = 0.0
        if max_rows is not None and rows >= max_rows:
            break
    return Ascent(x, lp, -(-rows // max(len(x), 1)), rate > 0.0)


def _connected(logp_grad: BatchLogpGrad, top: np.ndarray, top_lp: float, xs, lps, depth):
    """Whether each row of ``xs`` reaches ``top`` along a segment with no valley deeper than
    ``depth`` below the lower of the two ends."""
    points = xs[:, None, :] + _SEGMENT[None, :, None] * (top - xs)[:, None, :]
    seg_lp, _ = logp_grad(points.reshape(-1, xs.shape[1]))
    seg_lp = np.where(np.isfinite(seg_lp), seg_lp, -np.inf).reshape(len(xs), len(_SEGMENT))
    floor = np.minimum(lps, top_lp) - depth
    return np.all(seg_lp >= floor[:, None], axis=1)


def merge_optima(
    logp_grad: BatchLogpGrad,
    optima: np.ndarray,
    lps: np.ndarray,
    depth: float = VALLEY_DEPTH,
    roots: np.ndarray | None = None,
    curved: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Group optima into modes by the hill–valley test (see the module docstring).

    Optima are visited from the highest log density down; each becomes a mode unless it joins
    one. An optimum is tested against a mode only when that mode is the nearest one found so
    far (Euclidean distance), so it is tested once or twice however many modes there are. An
    optimum that fails against its nearest mode while belonging to a farther one (a curved
    basin) becomes a mode of its own, which :func:`map_modes` merges back after polishing.

    With ``roots`` (``(n, d, d)``, each optimum's local covariance root) and ``curved``
    (``(n,)``, where that curvature is known), an optimum of known curvature joins one of
    known curvature only from within its Laplace bulk (the 0.99 quantile): a shallow valley
    between a narrow peak and a wide bump far outside it does not make them one mode.

    Returns the index of each mode's highest optimum ``(K,)``, the label of every optimum
    ``(n,)`` and the number of batched calls (one per mode).
    """
    n = len(optima)
    labels = np.full(n, -1)
    finite = np.isfinite(lps)
    nearest = np.full(n, np.inf)
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
        distance = np.linalg.norm(optima[rest] - optima[head], axis=1)
        closer = distance < nearest[rest]
        nearest[rest[closer]] = distance[closer]
        rest = rest[closer]
        if rest.size:
            joined = _connected(logp_grad, optima[head], lps[head], optima[rest], lps[rest], depth)
            if curved is not None and curved[head]:
                far = _beyond_bulk(roots[head], optima[head], optima[rest])
                joined &= ~(far & curved[rest])
            labels[rest[joined]] = k
            calls += 1
    if not heads:  # no finite optimum at all: one mode at the best row
        heads, labels = [0], np.zeros(n, dtype=int)
    labels[labels < 0] = 0  # non-finite rows go with the highest mode; they carry no mass
    return np.asarray(heads), labels, calls


def moment_particles(dim: int) -> int:
    """Particles a mode's bulk needs for its Gaussian to be their moments, not the curvature.

    A covariance estimated from ``n`` draws is off from the truth by a Kullback–Leibler
    divergence of about ``d² / (4 n)`` nats, and importance weights from a Gaussian that far
    off collapse: with ``n ≥ 2d + 10`` alone, a 100-D Gaussian posterior (exact curvature at
    its exact mode) got importance ESS 1, Pareto k̂ 2.4 and log Z 5.5 nats off; a 200-D
    regression log Z 31 nats off and sds 34 times too wide. ``n ≥ d²`` keeps that divergence
    under 1/4 nat.
    """
    return max(2 * dim + 10, dim * dim)


def bulk_depth(dim: int) -> float:
    """Nats below a mode's peak that its bulk reaches: for a Gaussian, ``χ²_d / 2`` has mean
    ``d/2`` and sd ``√(d/2)``; four sds and five nats more keep all but stray particles."""
    return dim / 2 + 4.0 * np.sqrt(dim / 2) + 5.0


def _without_ridges(kept, labels, place_lp, ridge, dim):
    """Drop the kept optima that are points on a ridge rather than modes (``ridge``, by
    polished optimum; see :data:`RIDGE_DECREMENT`): their particles join the highest mode
    left. When every optimum is such a point, those more than :func:`bulk_depth` nats below
    the highest are dropped (below the bulk of any Gaussian the map could hold there).

    The second rule is for the high-dimensional case where no optimum polishes below the
    threshold: on a 500-group hierarchy (1005 parameters) Newton's polish stopped near the
    mode where the curvature has one negative direction (decrement 1.07), so every optimum
    was flagged and none dropped; a point 1610 nats lower, on a slope where the curvature is
    nearly flat (``log |det R|`` 2300 above the mode's), then took all the importance weight
    and the probe annealed (37 s to the first draw instead of 4, on 3 seeds of 8)."""
    on_ridge = ridge[kept]
    if not on_ridge.any():
        return kept, labels
    if on_ridge.all():
        on_ridge = place_lp[kept] < np.max(place_lp[kept]) - bulk_depth(dim)
        if not on_ridge.any():
            return kept, labels
    left = np.flatnonzero(~on_ridge)
    best = left[np.argmax(place_lp[kept[left]])]
    labels = np.where(on_ridge[labels], best, labels)
    renumber = np.cumsum(~on_ridge) - 1
    return kept[left], renumber[labels]


def map_modes(
    logp_grad: BatchLogpGrad,
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    depth: float = VALLEY_DEPTH,
    ascent_iter: int = 20,
    fold: Callable[[np.ndarray], np.ndarray] | None = None,
    known: ModeMap | None = None,
) -> ModeMap:
    """The mode map of a population (see the module docstring).

    After the merged modes' optima are polished, the optima merged into a mode that lie
    beyond the 0.99 quantile of its Laplace Gaussian are mapped again as modes of their own
    (merged among themselves and polished); the merge of all polished optima then keeps
    them apart where both are optima (:data:`OPTIMUM_DECREMENT`). Measured on a held-out 10-D
    mixture whose narrow peak (sd 0.76, mass 0.20) lies 6.6 from a wide bump (sd 1.93, mass
    0.33) across a 1-nat valley: as one mode, the bump's particles set its Gaussian, whose
    importance draws put 0.028 of the mass in the peak (``sample_dilation`` TV 0.17); as two,
    0.01-0.02. Only ascents that ended (not those still climbing) are mapped again, and
    where their polish ends on the mode's own optimum (a curved ridge) they merge back.

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
    fold : callable, optional
        A point's copy under an exact symmetry (see
        :attr:`~pymc_dilation.engine.population.PopulationTarget.fold`): the optima are
        folded, so the map holds one copy of each mode; a particle whose ascent crossed into
        another copy does not enter its mode's moments.
    known : ModeMap, optional
        Optima already polished, with their curvature (the Laplace approximation the
        population was whitened by): a mode whose optimum climbs to one of them takes its
        place and curvature instead of being polished again (see :func:`_polish`).
    """
    n, dim = ys.shape
    ascent = ascend(logp_grad, ys, lps, grads, ascent_iter)
    optima, opt_lp, calls = ascent.points, ascent.lps, ascent.calls
    crossed = np.zeros(n, dtype=bool)
    if fold is not None:
        folded = fold(optima)
        crossed = ~np.all(np.isclose(folded, optima, rtol=1e-9, atol=1e-9), axis=1)
        optima = np.where(crossed[:, None], folded, optima)
    heads, labels, merge_calls = merge_optima(logp_grad, optima, opt_lp, depth)
    calls += merge_calls * len(_SEGMENT)
    slope, slope_rows = _climb_far_heads(logp_grad, optima, opt_lp, ascent.climbing, heads, dim)
    calls += -(-slope_rows // max(n, 1))
    if fold is not None and slope_rows:  # the heads that climbed on may have crossed
        optima[heads] = fold(optima[heads])
    polished, hessian_grads = _polished(
        logp_grad, optima[heads], opt_lp[heads], known, depth, slope
    )
    outside = _outside_their_modes(optima, labels, heads, polished)
    outside &= np.isfinite(opt_lp) & ~ascent.climbing
    if outside.any():
        # Two optima joined by a shallow valley, the lower outside the higher's Laplace bulk
        # (a narrow peak beside a wide bump): one Gaussian would describe neither.
        rows = np.flatnonzero(outside)
        more_heads, more_labels, more_calls = merge_optima(
            logp_grad, optima[rows], opt_lp[rows], depth
        )
        calls += more_calls * len(_SEGMENT)
        more, spent = _polished(
            logp_grad, optima[rows[more_heads]], opt_lp[rows[more_heads]], known, depth
        )
        hessian_grads += spent
        labels[rows] = len(heads) + more_labels
        heads = np.concatenate([heads, rows[more_heads]])
        polished = _Polished(*(np.concatenate(pair) for pair in zip(polished, more)))
    places, place_lp, head_roots, curved, no_mode = (
        polished.places,
        polished.lps,
        polished.roots,
        polished.curved,
        polished.no_mode,
    )
    # Ascents that stopped short on a curved slope can look separated by a valley from their
    # own mode; polished, they land on its optimum, so the polished places are merged again
    # (a polished optimum only into a mode whose Laplace bulk holds it).
    kept, regroup, more_calls = merge_optima(
        logp_grad, places, place_lp, depth, roots=head_roots, curved=curved
    )
    calls += more_calls * len(_SEGMENT)
    labels = regroup[labels]
    kept, labels = _without_ridges(kept, labels, place_lp, no_mode, dim)
    locations, means, roots, mode_lp = [], [], [], []
    for k, head in enumerate(kept):
        location, lp_local = places[head], float(place_lp[head])
        bulk = ys[(labels == k) & (lps >= lp_local - bulk_depth(dim)) & ~crossed]
        cov = np.cov(bulk.T).reshape(dim, dim) if len(bulk) >= moment_particles(dim) else None
        if cov is not None and np.trace(cov) > 0:  # not when every particle is one point
            mean = bulk.mean(axis=0)
            root = np.linalg.cholesky(cov + 1e-10 * np.trace(cov) / dim * np.eye(dim))
        else:
            mean, root = location, head_roots[head]
        locations.append(location)
        means.append(mean)
        roots.append(root)
        mode_lp.append(lp_local)
    return ModeMap(
        locations=np.asarray(locations),
        means=np.asarray(means),
        roots=np.asarray(roots),
        logp=np.asarray(mode_lp),
        labels=labels,
        n_grad=calls + -(-hessian_grads // max(n, 1)),
    )


class _Polished(NamedTuple):
    """Optima after :func:`_polish`, one row per head."""

    places: np.ndarray  # (k, d); the ascent's optimum where the polish stalled
    lps: np.ndarray  # (k,)
    roots: np.ndarray  # (k, d, d) local covariance roots (the identity where unknown)
    curved: np.ndarray  # (k,) polished to an optimum whose curvature is known
    no_mode: np.ndarray  # (k,) a ridge or slope point, not a mode (see _without_ridges)


def _polished(logp_grad: BatchLogpGrad, starts, lps, known, depth, slope=None):
    """:func:`_polish` of the heads ``starts`` (log densities ``lps``), with which of them
    are modes: returns a :class:`_Polished` record and the gradients spent on curvature."""
    places, roots, converged, ridge, spent = _polish(logp_grad, starts, lps, known, depth, slope)
    place_lp, place_grad = logp_grad(places)
    stalled = ~converged | ~(place_lp >= lps)
    places[stalled], place_lp[stalled] = starts[stalled], lps[stalled]
    decrement = np.sum(np.einsum("kij,ki->kj", roots, np.asarray(place_grad)) ** 2, axis=1)
    on_ridge = converged & ~stalled & (decrement > RIDGE_DECREMENT)
    slope = np.zeros(len(starts), dtype=bool) if slope is None else slope
    no_mode = on_ridge | (slope & ~converged) | ridge
    optimum = ~stalled & ~no_mode & (decrement <= OPTIMUM_DECREMENT)
    return _Polished(places, place_lp, roots, optimum, no_mode), spent


def _outside_their_modes(optima, labels, heads, polished: _Polished) -> np.ndarray:
    """Which ``optima`` lie outside the Laplace bulk (the 0.99 quantile) of the polished
    optimum of the mode they were merged into; ``False`` where that mode's curvature is
    unknown and for the heads themselves."""
    outside = np.zeros(len(optima), dtype=bool)
    for k in np.flatnonzero(polished.curved):  # one per mode
        rows = np.flatnonzero(labels == k)
        rows = rows[rows != heads[k]]
        if rows.size:
            outside[rows] = _beyond_bulk(polished.roots[k], polished.places[k], optima[rows])
    return outside


def _beyond_bulk(root: np.ndarray, center: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which ``points`` lie beyond the 0.99 quantile of ``N(center, root rootᵀ)``."""
    z = np.linalg.solve(root, (points - center).T)
    return np.sum(z**2, axis=0) > chi2.isf(0.01, points.shape[1])


def _polish(
    logp_grad: BatchLogpGrad,
    starts,
    lps,
    known: ModeMap | None,
    depth: float,
    skip: np.ndarray | None = None,
):
    """:func:`~pymc_dilation.engine.laplace.newton_polish` of the optima ``starts``, except
    those that reach an optimum of ``known`` (:func:`_known_optima`): they take its place and
    curvature, found once already; and those in ``skip`` that do not (they keep their place,
    an identity root and ``converged`` False).

    On a unimodal posterior every ascent ends on the optimum that the Laplace approximation
    of the start point polished, and polishing it again cost a Hessian (``2d`` gradients)
    and an eigendecomposition: 1.3 s of a 500-group hierarchy's 3.6 s tuning population
    (1005 parameters).
    """
    k, dim = starts.shape
    places = starts.copy()
    roots = np.broadcast_to(np.eye(dim), (k, dim, dim)).copy()
    converged = np.zeros(k, dtype=bool)
    calls = 0
    at = np.full(k, -1)
    if known is not None:
        at, calls = _known_optima(logp_grad, known, starts, lps, depth)
        mine = at >= 0
        places[mine], roots[mine] = known.locations[at[mine]], known.roots[at[mine]]
        converged[mine] = True
    own = at < 0 if skip is None else (at < 0) & ~skip
    ridge = np.zeros(k, dtype=bool)
    if own.any() and hessian_free_pays(dim, POLISH_STEPS):
        own, ridge, more = _polish_hessian_free(
            logp_grad, places, roots, converged, own, known, depth
        )
        calls += more
    if own.any():
        places[own], roots[own], converged[own], more = newton_polish(
            logp_grad, places[own], POLISH_STEPS
        )
        calls += more
    return places, roots, converged, ridge, calls


def _polish_hessian_free(logp_grad, places, roots, converged, own, known, depth):
    """Truncated Newton steps (:func:`~pymc_dilation.engine.hessian_free.truncated_newton`)
    from the rows ``own`` of ``places`` (updated in place, with ``roots`` and ``converged``),
    before any Hessian: a row whose decrement bound stays above :data:`RIDGE_DECREMENT` is no
    optimum (``ridge``, converged with no curvature); one that reached an optimum of ``known``
    takes its place and curvature. Returns the rows still to polish with Hessians (they
    ended on an optimum of their own), ``ridge`` and the gradients spent."""
    rows = np.flatnonzero(own)
    ascent = truncated_newton(logp_grad, places[rows], POLISH_STEPS)
    places[rows] = ascent.points
    ridge = np.zeros(len(places), dtype=bool)
    off = ~(ascent.decrement <= RIDGE_DECREMENT) & np.isfinite(ascent.lps)
    ridge[rows[off]] = converged[rows[off]] = True
    calls = ascent.calls
    rows = rows[~off]
    if known is not None and rows.size:
        at, spent = _known_optima(logp_grad, known, places[rows], ascent.lps[~off], depth)
        mine = at >= 0
        places[rows[mine]], roots[rows[mine]] = known.locations[at[mine]], known.roots[at[mine]]
        converged[rows[mine]] = True
        calls += spent
        rows = rows[~mine]
    left = np.zeros(len(places), dtype=bool)
    left[rows] = True
    return left, ridge, calls


def _climb_far_heads(logp_grad: BatchLogpGrad, optima, opt_lp, climbing, heads, dim: int):
    """Climb on from the merged heads whose ascent ran out of iterations while still gaining
    and that lie more than :func:`bulk_depth` nats below the highest head, up to
    :data:`KNOWN_ASCENT_ITER` iterations more (``optima`` and ``opt_lp`` updated in place).

    Returns which heads are still climbing that far down (``(len(heads),)``: slopes, not
    optima; :func:`map_modes` drops them unpolished) and the rows evaluated. A Newton polish
    from such a point costs a Hessian (``2d`` gradients) and a factorisation per step and
    ends on no mode: on a 500-group hierarchy (1005 parameters) a prior draw's ascent was
    still 3120 nats below the mode after 20 iterations, its whitened gradient norm 123; the
    polish took 0.56 s of the chain's 3 s to the first draw and left it 1610 nats below, a
    ridge point that the ridge rule then dropped.
    """
    top = float(np.max(opt_lp[heads])) if len(heads) else -np.inf
    far = climbing[heads] & (opt_lp[heads] < top - bulk_depth(dim))
    slope = np.zeros(len(heads), dtype=bool)
    if not far.any():
        return slope, 0
    rows = heads[far]
    with np.errstate(all="ignore"):
        _, grads = logp_grad(optima[rows])
    grads = np.where(np.isfinite(grads), grads, 0.0)
    more = ascend(logp_grad, optima[rows], opt_lp[rows], grads, KNOWN_ASCENT_ITER)
    optima[rows], opt_lp[rows] = more.points, more.lps
    slope[far] = more.climbing & (more.lps < top - bulk_depth(dim))
    return slope, len(rows) * (1 + more.calls)


def _known_optima(logp_grad: BatchLogpGrad, known: ModeMap, points, lps, depth):
    """For each of ``points`` (optima, log densities ``lps``), the mode of ``known`` it
    belongs to, or -1: the one whose Gaussian is nearest (Mahalanobis), when the point lies
    in that Gaussian's bulk (the 0.99 quantile), the mode's optimum is no more than ``depth``
    nats below it (a higher optimum is another one), and the hill–valley test joins the two.
    Returns them and the log density evaluations spent."""
    z = np.einsum("kij,nkj->nki", known.inverse_roots, points[:, None, :] - known.means[None])
    squares = np.sum(z**2, axis=2)
    nearest = np.argmin(squares, axis=1)
    inside = squares[np.arange(len(points)), nearest] <= chi2.isf(0.01, points.shape[1])
    inside &= np.isfinite(lps) & (known.logp[nearest] >= lps - depth)
    at = np.full(len(points), -1)
    calls = 0
    for k in np.unique(nearest[inside]):
        rows = np.flatnonzero(inside & (nearest == k))
        joined = _connected(
            logp_grad, known.locations[k], float(known.logp[k]), points[rows], lps[rows], depth
        )
        at[rows[joined]] = k
        calls += len(rows) * len(_SEGMENT)
    return at, calls


def known_optimum(logp_grad: BatchLogpGrad, location: np.ndarray, root: np.ndarray) -> ModeMap:
    """A one-mode map of an optimum already polished and its covariance root (the Laplace
    approximation), for :func:`map_modes`'s ``known``."""
    lp, _ = logp_grad(location[None])
    return ModeMap(
        locations=location[None].copy(),
        means=location[None].copy(),
        roots=root[None].copy(),
        logp=np.asarray(lp, dtype=float).reshape(1),
        labels=np.zeros(0, dtype=int),
        n_grad=0,
    )


def add_modes(
    logp_grad: BatchLogpGrad,
    modes: ModeMap,
    xs: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    depth: float = VALLEY_DEPTH,
    widen: bool = False,
    fold: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[ModeMap, int]:
    """``modes`` with the modes of the points ``xs`` that the map lacks added.

    For points that reached mass the map does not cover (a chain, or particles that diffused
    from their modes). The points are mapped among themselves (:func:`map_modes`); each of
    their modes is kept unless the hill–valley test joins it to a mode of ``modes``. Returns
    the map (``modes`` itself when nothing is new; ``labels`` are those of ``modes``) and the
    batched calls spent.

    With ``widen``, an optimum that joins a mode of ``modes`` but lies beyond the bulk of its
    Gaussian (past the 0.99 quantile of the squared Mahalanobis distance) widens that
    Gaussian to the moments of the two, each weighed by its Laplace mass: a mode that is two
    overlapping bumps, mapped from the particles of one, then has a Gaussian covering both.
    """
    known, calls = _in_known_modes(logp_grad, modes, xs, lps, grads, depth, fold)
    if known.all():
        return modes, calls
    # Only the points not known climb again: of 2000 centers spread over a 10-D mixture's
    # modes, all but a few end in modes already mapped.
    own = map_modes(logp_grad, xs[~known], lps[~known], grads[~known], depth, fold=fold)
    calls += -(-own.n_grad * int(np.sum(~known)) // len(xs))
    new = []
    means, roots, widened = modes.means.copy(), modes.roots.copy(), False
    for k in range(own.n_modes):
        joined = _connected(
            logp_grad, own.locations[k], float(own.logp[k]), modes.locations, modes.logp, depth
        )
        calls += len(_SEGMENT)
        if not np.isfinite(own.logp[k]):
            continue
        if not joined.any():
            new.append(k)
        elif widen:
            j = _closest(own.locations[k], means, roots, joined)
            if j is not None:
                # Each bump weighed by its Laplace mass exp(peak) |det root|.
                log_mass = np.array(
                    [
                        modes.logp[j] + root_log_det(roots[j]),
                        own.logp[k] + root_log_det(own.roots[k]),
                    ]
                )
                share = 1.0 / (1.0 + np.exp(log_mass[1] - log_mass[0]))
                means[j], roots[j] = moment_match(
                    (means[j], roots[j] @ roots[j].T),
                    (own.locations[k], own.roots[k] @ own.roots[k].T),
                    share,
                )
                widened = True
    if not new and not widened:
        return modes, calls
    extended = ModeMap(
        locations=np.vstack([modes.locations, own.locations[new]]),
        means=np.vstack([means, own.means[new]]),
        roots=np.concatenate([roots, own.roots[new]]),
        logp=np.append(modes.logp, own.logp[new]),
        labels=modes.labels,
        n_grad=modes.n_grad,
    )
    return extended, calls


def _in_known_modes(
    logp_grad, modes: ModeMap, xs, lps, grads, depth, fold
) -> tuple[np.ndarray, int]:
    """Which points of ``xs`` climb to an optimum that joins a mode of ``modes`` (the
    hill–valley test against the mode whose Gaussian is nearest, by Mahalanobis distance)
    within the bulk of that mode's Gaussian (the 0.99 quantile), where :func:`add_modes`
    would neither add nor widen a mode. Returns the ``(n,)`` mask and the batched calls
    spent.

    Checked before :func:`map_modes` polishes the points' own optima, which costs a Hessian
    (``2d`` gradients) and a factorisation per optimum: on a unimodal 205-parameter hierarchy
    the heavy importance draws' optima, all on the one mode, cost 0.65 s of the tuning
    population's 2.1 s that way.
    """
    optima, opt_lp, calls, _ = ascend(logp_grad, xs, lps, grads, KNOWN_ASCENT_ITER)
    if fold is not None:  # an exact symmetry: the log densities are unchanged
        optima = fold(optima)
    finite = np.isfinite(opt_lp)
    known = np.zeros(len(xs), dtype=bool)
    if not finite.any():
        return known, calls
    at, spent = _known_optima(logp_grad, modes, optima[finite], opt_lp[finite], depth)
    known[finite] = at >= 0
    return known, calls + -(-spent // len(xs))


def _closest(location, means, roots, candidates) -> int | None:
    """Among the modes ``candidates`` (a mask), the one whose Gaussian is nearest to
    ``location`` by Mahalanobis distance, when ``location`` lies beyond that Gaussian's bulk;
    otherwise None."""
    rows = np.flatnonzero(candidates)
    z = np.linalg.solve(roots[rows], (location - means[rows])[..., None])[..., 0]
    squares = np.sum(z**2, axis=1)
    best = int(np.argmin(squares))
    if squares[best] <= chi2.isf(0.01, location.size):
        return None
    return int(rows[best])


def moment_match(first, second, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance root of the mixture ``share · N(first) + (1 - share) · N(second)``,
    each Gaussian given as ``(mean, covariance)``."""
    (m1, c1), (m2, c2) = first, second
    diff = m1 - m2
    cov = share * c1 + (1.0 - share) * c2 + share * (1.0 - share) * np.outer(diff, diff)
    return share * m1 + (1.0 - share) * m2, shrunk_root(cov, dense=True)
