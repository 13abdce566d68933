"""Exact symmetry jumps: relabellings and sign flips that leave the posterior unchanged.

A mixture's exchangeable components can be listed in any of ``K!`` orders, a factor model's
loadings can flip sign column by column: the posterior has as many copies of each mode as the
symmetry group has elements, and no kernel that moves by gradients crosses between them. When
the group is known, it need not be: a draw ``x`` and its image ``g x`` under a uniformly drawn
group element are equally likely, so reporting ``g x`` (after a Metropolis–Hastings test that
costs one log-density evaluation) samples every copy with its exact share, whatever their
number. This is Frühwirth-Schnatter's (2001) random permutation sampler, generalised to signed
permutations and to a chain that keeps moving in the copy it is in (the move is applied to the
reported draw only; see :func:`symmetry_move`).

Representation. A group element acts on the sampler's coordinates ``x`` (length ``d``)
through the *extended* vector ``e = (x, c)``, where each *completion* ``c_j = -sum(x[I_j])``
restores the coordinate a sum-to-zero parameterization left out (PyMC's simplex transform of
a Dirichlet variable: the ``K - 1`` unconstrained values are the first ``K - 1`` of a centered
log vector whose ``K``-th entry is minus their sum). The element is a signed permutation of
``e``, ``e' = s * e[p]``, and ``x' = e'[:d]``. Such a map is linear with ``|det| = 1`` (it is
an element of a finite group of linear maps), so the Metropolis–Hastings ratio of the move is
the ratio of the log densities alone: the move is exact whether or not the log density is
truly invariant (a wrongly confirmed symmetry would be rejected, not obeyed).

Factors. The group is a product of *factors*, each acting on labelled *slots* ``(K, m)``:
indices of ``e`` that belong to label ``k``. A ``"permute"`` factor sends label ``k``'s slots
to label ``sigma(k)``'s (``K!`` elements); a ``"flip"`` factor negates the slots of any subset
of labels (``2**K`` elements). Nothing here knows of PyMC: which slots form a factor is found
by :func:`invariance` on candidates the caller proposes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import permutations, product

import numpy as np

__all__ = [
    "GroupFactor",
    "SymmetryGroup",
    "SymmetryMove",
    "ElementStream",
    "Invariance",
    "invariance",
    "mirrored",
    "moves_mode",
    "symmetry_move",
    "orbit_mass_ratio",
]

KINDS = ("permute", "flip")
NEAR_NATS = 3.0
"""A candidate that changes the log density by at most this at every test point is a *near*
symmetry (a weakly informative prior that is not symmetric, say): it mirrors path centers
(:func:`mirrored`), and the population proposes it as an exact Metropolis–Hastings jump."""
MAX_GENERATORS_TESTED = 16
"""A factor with more generators than this (a flip of 1000 coefficients' signs) is tested with
this many uniformly drawn elements instead."""
INVARIANCE_RTOL = 1e-8
"""A candidate is a symmetry when every generator changes the log density by at most this
(relative to ``1 + |log density|``) at every test point: far above rounding (summing a
permuted vector), far below any real asymmetry."""
MAX_ENUMERATED = 40320
"""Groups up to this order (``8!``) are enumerated to count a mode's distinct copies."""
SAMPLED_ELEMENTS = 256
"""Uniformly drawn elements that test a group too large to enumerate (and any group first, as
most of them move a mode that can be moved)."""
STREAM_BATCH = 256
"""Elements an :class:`ElementStream` draws at a time."""
SAME_COPY = 3.0
"""Two images of a mode closer than this (Mahalanobis, in the mode's covariance) are one copy."""

BatchLogp = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GroupFactor:
    """Labels whose slots a symmetry permutes (``kind="permute"``) or negates (``"flip"``).

    Attributes
    ----------
    kind : {"permute", "flip"}
    slots : numpy.ndarray
        ``(K, m)`` integer indices into the extended vector: row ``k`` is label ``k``'s.
    description : str
        What the factor is, for people ("mu, w: 4 labels permuted").
    """

    kind: str
    slots: np.ndarray
    description: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        slots = np.asarray(self.slots)
        if slots.ndim != 2 or slots.shape[0] < 1 or slots.shape[1] < 1:
            raise ValueError(f"slots must be a non-empty (labels, m) array, got {slots.shape}.")
        if self.kind == "permute" and slots.shape[0] < 2:
            raise ValueError("a permutation needs at least two labels.")
        if len(np.unique(slots)) != slots.size:
            raise ValueError("a factor's slots must be distinct.")

    @property
    def labels(self) -> int:
        return int(np.shape(self.slots)[0])

    @property
    def order(self) -> int:
        return math.factorial(self.labels) if self.kind == "permute" else 2**self.labels

    def label_maps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, K)`` uniformly drawn elements: a permutation of the labels, or signs."""
        if self.kind == "permute":
            return rng.permuted(np.tile(np.arange(self.labels), (n, 1)), axis=1)
        return rng.choice(np.array([-1.0, 1.0]), size=(n, self.labels))

    def all_label_maps(self) -> np.ndarray:
        """Every element, ``(order, K)``."""
        if self.kind == "permute":
            return np.array(list(permutations(range(self.labels))))
        return np.array(list(product((1.0, -1.0), repeat=self.labels)))

    def generators(self) -> np.ndarray:
        """Elements that generate the factor: a transposition and a full cycle of the labels,
        or each label's flip."""
        k = self.labels
        if self.kind == "permute":
            swap = np.arange(k)
            swap[[0, 1]] = [1, 0]
            return np.array([swap, np.roll(np.arange(k), 1)])
        return np.where(np.eye(k, dtype=bool), -1.0, 1.0)

    def compose(self, perm: np.ndarray, sign: np.ndarray, maps: np.ndarray) -> None:
        """Apply ``maps`` (``(n, K)`` elements) after the signed permutations ``perm, sign``
        (``(n, D)``, in place)."""
        slots = np.asarray(self.slots)
        if self.kind == "permute":
            # e'[slots[k]] = e[slots[maps[k]]]: composing with the permutation so far.
            source = slots[maps]  # (n, K, m)
            rows = np.arange(len(maps))[:, None, None]
            new_perm = perm[rows, source]
            new_sign = sign[rows, source]
            perm[rows, slots[None]] = new_perm
            sign[rows, slots[None]] = new_sign
        else:
            sign[:, slots] *= maps[:, :, None]


@dataclass(frozen=True)
class SymmetryGroup:
    """A product of :class:`GroupFactor` acting on the sampler's ``d`` coordinates.

    Attributes
    ----------
    dim : int
        ``d``.
    completions : tuple of numpy.ndarray
        For each, the coordinates ``I`` whose ``-sum(x[I])`` is appended to the extended
        vector (in order, from index ``d``).
    factors : tuple of GroupFactor
    """

    dim: int
    completions: tuple[np.ndarray, ...] = ()
    factors: tuple[GroupFactor, ...] = field(default=())

    @property
    def order(self) -> int:
        """Number of elements (an upper bound if factors overlap)."""
        return math.prod(f.order for f in self.factors)

    @property
    def extended_dim(self) -> int:
        return self.dim + len(self.completions)

    def extend(self, xs: np.ndarray) -> np.ndarray:
        """``(n, d)`` -> ``(n, d + completions)``."""
        xs = np.atleast_2d(xs)
        if not self.completions:
            return xs
        extra = np.stack([-xs[:, index].sum(axis=1) for index in self.completions], axis=1)
        return np.concatenate([xs, extra], axis=1)

    def _identity(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        size = self.extended_dim
        return np.tile(np.arange(size), (n, 1)), np.ones((n, size))

    def random_elements(self, rng: np.random.Generator, n: int):
        """``(perm, sign)``, each ``(n, D)``: ``n`` uniformly drawn group elements."""
        perm, sign = self._identity(n)
        for factor in self.factors:
            factor.compose(perm, sign, factor.label_maps(rng, n))
        return perm, sign

    def all_elements(self):
        """Every element as ``(perm, sign)``, or None above :data:`MAX_ENUMERATED`."""
        if self.order > MAX_ENUMERATED:
            return None
        per_factor = [f.all_label_maps() for f in self.factors]
        combos = list(product(*[range(len(m)) for m in per_factor]))
        perm, sign = self._identity(len(combos))
        for j, factor in enumerate(self.factors):
            factor.compose(perm, sign, per_factor[j][[c[j] for c in combos]])
        return perm, sign

    def apply(self, xs: np.ndarray, perm: np.ndarray, sign: np.ndarray) -> np.ndarray:
        """The images ``(n, d)`` of the rows of ``xs`` (one element per row)."""
        extended = self.extend(xs)
        rows = np.arange(len(extended))[:, None]
        return (sign * extended[rows, perm])[:, : self.dim]

    def describe(self) -> list[str]:
        return [f.description or f"{f.kind} {f.labels} labels" for f in self.factors]

    def canonical(self, xs: np.ndarray) -> np.ndarray:
        """Every row moved to its copy in a fixed fundamental domain: each flipped label's
        first slot made non-negative, then each permuted factor's labels sorted by their
        first slot. Rows of one orbit get the same image (ties aside), so a map built from
        canonical particles holds one copy of each mode."""
        xs = np.atleast_2d(np.asarray(xs, dtype=float))
        for factor in sorted(self.factors, key=lambda f: f.kind != "flip"):
            keys = self.extend(xs)[:, np.asarray(factor.slots)[:, 0]]
            if factor.kind == "flip":
                maps = np.where(keys < 0, -1.0, 1.0)
            else:
                maps = np.argsort(keys, axis=1, kind="stable")
            perm, sign = self._identity(len(xs))
            factor.compose(perm, sign, maps)
            xs = self.apply(xs, perm, sign)
        return xs


@dataclass(frozen=True)
class Invariance:
    """How a candidate's generators change the log density at the test points.

    Attributes
    ----------
    exact : bool
        Unchanged everywhere (within :data:`INVARIANCE_RTOL`): a symmetry.
    max_change : float
        The largest change, in nats (``inf`` when no point was moved or a density was not
        finite).
    """

    exact: bool
    max_change: float

    @property
    def near(self) -> bool:
        """Not exact, but every generator's Metropolis–Hastings ratio at the test points is at
        least ``exp(-NEAR_NATS)``: a mirror worth starting paths from (:func:`mirrored`)."""
        return not self.exact and self.max_change <= NEAR_NATS


def invariance(
    factor: GroupFactor,
    dim: int,
    completions: Sequence[np.ndarray],
    logp: BatchLogp,
    points: np.ndarray,
) -> Invariance:
    """Whether (and by how much) ``factor`` changes ``logp`` at ``points``.

    Tested with its generators (:meth:`GroupFactor.generators`) when there are at most
    :data:`MAX_GENERATORS_TESTED` of them, otherwise with as many uniformly drawn elements
    (a fixed generator: the same model gets the same answer). One generator at one point is
    tried first: most candidates fail there, for one evaluation. Points the elements do not
    move (labels with equal values) prove nothing and are skipped; at least one point must be
    moved, and every point must have a finite density.
    """
    group = SymmetryGroup(dim, tuple(completions), (factor,))
    points = np.atleast_2d(points)
    elements = factor.generators()
    if len(elements) > MAX_GENERATORS_TESTED:
        elements = factor.label_maps(np.random.default_rng(0), MAX_GENERATORS_TESTED)
    first, _ = _changes(group, factor, elements[:1], points[:1], logp)
    if first is None or (first.size and first.max() > NEAR_NATS):
        return Invariance(False, np.inf if first is None else float(first.max()))
    change, reference = _changes(group, factor, elements, points, logp)
    if change is None or change.size == 0:
        return Invariance(False, np.inf)
    exact = bool(np.all(change <= INVARIANCE_RTOL * (1.0 + np.abs(reference))))
    return Invariance(exact, float(change.max()))


def _changes(group, factor, elements, points, logp):
    """``(|logp(g x) - logp(x)|, logp(x))`` for every element and point that the element
    moves (``(None, None)`` when a density is not finite)."""
    n, n_el = len(points), len(elements)
    perm, sign = group._identity(n * n_el)
    factor.compose(perm, sign, np.tile(elements, (n, 1)))
    repeated = np.repeat(points, n_el, axis=0)
    images = group.apply(repeated, perm, sign)
    moved = np.abs(images - repeated).max(axis=1) > 1e-6 * (1.0 + np.abs(repeated).max(axis=1))
    with np.errstate(all="ignore"):
        values = logp(np.vstack([points, images[moved]]))
    base, changed = values[:n], values[n:]
    if not np.all(np.isfinite(base)) or not np.all(np.isfinite(changed)):
        return None, None
    reference = np.repeat(base, n_el)[moved]
    return np.abs(changed - reference), reference


def moves_mode(
    group: SymmetryGroup, mode: np.ndarray, root: np.ndarray, rng: np.random.Generator
) -> bool:
    """Whether some element of ``group`` sends the mode (``mode``, covariance ``root
    root^T``) to another one: an image farther than :data:`SAME_COPY` (Mahalanobis). A near
    symmetry that only shuffles a mode within itself gives the map nothing the kernel does
    not; one that mirrors it (a symmetric likelihood under a prior that is not) points at
    the mode no path from this side reaches.

    Exact (every element tested) for groups up to :data:`MAX_ENUMERATED`, which are
    enumerated only when :data:`SAMPLED_ELEMENTS` random elements move no copy: enumerating
    the 8! permutations of eight exchangeable schools took 38 ms of each chain's start."""
    sampled = group.random_elements(np.random.default_rng(0), SAMPLED_ELEMENTS)
    if _farthest_image(group, sampled, mode, root) > SAME_COPY:
        return True
    elements = group.all_elements()
    if elements is None:
        elements = group.random_elements(rng, SAMPLED_ELEMENTS)
    return _farthest_image(group, elements, mode, root) > SAME_COPY


def _farthest_image(group: SymmetryGroup, elements, mode: np.ndarray, root: np.ndarray) -> float:
    """The largest Mahalanobis distance from ``mode`` to its images under ``elements``."""
    perm, sign = elements
    images = group.apply(np.repeat(np.atleast_2d(mode), len(perm), axis=0), perm, sign)
    offsets = np.linalg.solve(root, (images - mode).T).T
    return float(np.max(np.linalg.norm(offsets, axis=1)))


def mirrored(
    group: SymmetryGroup, xs: np.ndarray, rng: np.random.Generator, share: float = 0.5
) -> np.ndarray:
    """``xs`` with a random ``share`` of the rows moved by uniformly drawn group elements: path
    centers that reach the copies a near symmetry maps the found modes to."""
    xs = np.array(xs, dtype=float, copy=True)
    pick = rng.uniform(size=len(xs)) < share
    if pick.any():
        perm, sign = group.random_elements(rng, int(pick.sum()))
        xs[pick] = group.apply(xs[pick], perm, sign)
    return xs


@dataclass(frozen=True)
class SymmetryMove:
    """What :func:`symmetry_move` did to each row."""

    points: np.ndarray
    lps: np.ndarray
    accepted: np.ndarray


class ElementStream:
    """Uniformly drawn elements of a group, drawn :data:`STREAM_BATCH` at a time and handed out
    in order: a chain that moves one draw an iteration (:func:`symmetry_move`) spent 19 of its
    48 µs a move drawing a single element (Neal's funnel, 9 permuted and 9 flipped labels).
    The elements are independent and uniform whatever the batch size."""

    def __init__(self, group: SymmetryGroup, rng: np.random.Generator):
        self.group = group
        self.rng = rng
        self._perm = self._sign = np.zeros((0, group.extended_dim))
        self._next = 0

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(perm, sign)``, each ``(n, D)``: the next ``n`` elements."""
        if self._next + n > len(self._perm):
            self._perm, self._sign = self.group.random_elements(self.rng, max(n, STREAM_BATCH))
            self._next = 0
        rows = slice(self._next, self._next + n)
        self._next += n
        return self._perm[rows], self._sign[rows]


def symmetry_move(
    group: SymmetryGroup,
    xs: np.ndarray,
    lps: np.ndarray,
    logp: BatchLogp,
    rng: np.random.Generator,
    elements: ElementStream | None = None,
) -> SymmetryMove:
    """One Metropolis–Hastings jump of each row to its image under a uniform group element.

    Exact for any group of signed permutations (with completions): the proposal is symmetric
    (``g`` and its inverse are equally likely) and volume-preserving, so the acceptance ratio
    is ``exp(logp(g x) - logp(x))``; it is 1 where the symmetry is exact.

    Applied to a chain's *reported* draw, with the chain continuing from its own state, it
    keeps the draws' law: each report is one step of a kernel that leaves the posterior
    invariant, taken from a state distributed as the posterior. ``elements``: where the
    group's elements come from (drawn here from ``rng`` when None).
    """
    xs = np.atleast_2d(xs)
    if elements is None:
        perm, sign = group.random_elements(rng, len(xs))
    else:
        perm, sign = elements.take(len(xs))
    proposals = group.apply(xs, perm, sign)
    log_u = np.log(rng.uniform(size=len(xs)))
    with np.errstate(all="ignore"):
        proposed = np.asarray(logp(proposals), dtype=float)
        accept = np.isfinite(proposed) & (log_u < proposed - np.asarray(lps, dtype=float))
    points = np.where(accept[:, None], proposals, xs)
    return SymmetryMove(points, np.where(accept, proposed, lps), accept)


def orbit_mass_ratio(
    group: SymmetryGroup,
    locations: np.ndarray,
    roots: np.ndarray,
    weights: np.ndarray,
) -> float | None:
    """How much more mass the posterior holds than the found modes: ``sum over copies / sum
    over found``, counting every mode's distinct images under the group.

    Found modes are sorted into orbits (a mode whose image lies within :data:`SAME_COPY` of
    another found mode is a copy of it); an orbit holding ``f`` found modes of mean weight
    ``w`` and ``n`` distinct copies holds ``n * w``. ``roots`` are the modes' covariance
    factors (``(K, d, d)``, lower triangular or any ``L`` with ``L L^T = Sigma``). None when
    the group is too large to enumerate (:data:`MAX_ENUMERATED`).
    """
    elements = group.all_elements()
    if elements is None:
        return None
    perm, sign = elements
    locations = np.atleast_2d(locations)
    weights = np.asarray(weights, dtype=float)
    n_modes = len(locations)
    orbit = -np.ones(n_modes, dtype=int)
    copies: list[float] = []
    for k in range(n_modes):
        if orbit[k] >= 0:
            continue
        images = group.apply(np.repeat(locations[k][None], len(perm), axis=0), perm, sign)
        # The elements that leave the mode where it is (components with equal values) form
        # its stabiliser; the distinct copies are the group's order over the stabiliser's.
        offsets = np.linalg.solve(roots[k], (images - locations[k]).T).T
        stabiliser = int(np.sum(np.linalg.norm(offsets, axis=1) <= SAME_COPY))
        orbit[k] = len(copies)
        copies.append(len(perm) / max(stabiliser, 1))
        for j in range(k + 1, n_modes):
            if orbit[j] >= 0:
                continue
            offsets = np.linalg.solve(roots[k], (images - locations[j]).T).T
            if np.min(np.linalg.norm(offsets, axis=1)) <= SAME_COPY:
                orbit[j] = orbit[k]
    total = 0.0
    for o, n_copies in enumerate(copies):
        members = weights[orbit == o]
        total += n_copies * float(members.mean())
    found = float(weights.sum())
    return total / found if found > 0 else None
