"""Symmetries of a PyMC model's posterior, found from its variables and confirmed numerically.

Candidates come from the model's structure: variables sharing an axis of the same length
(a ``dims`` name, or just the length), whose entries may be exchangeable labels (a
mixture's ``w``, ``mu`` and ``sigma`` over its components) or columns whose signs may flip
together (a factor model's loadings and factors), and real-valued variables whose sign may
flip alone or in pairs (``y ~ Normal(a * b, ...)``). Each candidate is confirmed on the
compiled log density: its generators must leave it unchanged at several points drawn from
the prior (or about the start). What survives is a
:class:`~pymc_dilation.engine.symmetry.SymmetryGroup` in the sampler's coordinates, which the
engine's exact symmetry jumps use (:func:`~pymc_dilation.engine.symmetry.symmetry_move`).

The group acts on unconstrained values: a permutation of a Dirichlet's components is linear
on its simplex-transformed values (their completion by minus their sum is permuted with them),
elementwise transforms with shared bounds commute with permutations, and signs flip only on
untransformed variables. A symmetry that only shows in constrained space through another
transform (an ordered one, a zero-sum one) is not found; one that is found is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from pymc_dilation.engine.symmetry import GroupFactor, SymmetryGroup, invariance

__all__ = [
    "Symmetries",
    "detect_symmetries",
    "find_symmetries",
    "symmetry_test_points",
    "announce",
]

_log = logging.getLogger("pymc")

MAX_PAIRED_SIGNS = 12
"""Sign flips of pairs of whole variables are tried when at most this many are real-valued."""
TEST_POINTS = 6
SAME_SHAPE = frozenset(
    {"LogTransform", "LogOddsTransform", "IntervalTransform", "LogExpM1", "CircularTransform",
     "Ordered"}
)  # fmt: skip
"""Transforms whose values have the variable's own shape, entry by entry (read from the value
variables, so nothing is compiled to find the shapes)."""


@dataclass(frozen=True)
class _Variable:
    """A sampled variable as the group sees it: its entries' indices in the extended vector."""

    name: str
    index: np.ndarray  # constrained shape -> extended-vector index
    dims: tuple[str | None, ...]
    signed: bool  # untransformed: its sign may flip

    def axes(self, length: int, dim: str | None = None) -> list[int]:
        if dim is not None:
            return [a for a, name in enumerate(self.dims) if name == dim]
        return [a for a, n in enumerate(self.index.shape) if n == length]

    def slots(self, axis: int) -> np.ndarray:
        length = self.index.shape[axis]
        return np.moveaxis(self.index, axis, 0).reshape(length, -1)


def _variables(model, logp) -> tuple[list[_Variable], list[np.ndarray]]:
    """The sampled variables' extended indices, and the completions of simplex values."""
    from pymc.logprob.transforms import SimplexTransform

    value_vars = {v.name: v for v in model.value_vars}
    variables, completions = [], []
    offset = 0
    for info in logp.var_infos:
        value = value_vars[info.name]
        rv = model.values_to_rvs[value]
        transform = model.rvs_to_transforms.get(rv)
        simplex = isinstance(transform, SimplexTransform) and len(info.shape) > 0
        if transform is not None and not simplex and type(transform).__name__ not in SAME_SHAPE:
            offset += info.size  # zero-sum, Cholesky, chained: no candidate
            continue
        shape = (*info.shape[:-1], info.shape[-1] + 1) if simplex else tuple(info.shape)
        dims = tuple(model.named_vars_to_dims.get(rv.name, ())) or (None,) * len(shape)
        positions = offset + np.arange(info.size).reshape(info.shape)
        offset += info.size
        if simplex:
            batch = positions.reshape(-1, shape[-1] - 1)
            completed = []
            for row in batch:
                completions.append(row)
                completed.append(logp.dim + len(completions) - 1)
            index = np.concatenate([batch, np.array(completed)[:, None]], axis=1).reshape(shape)
        else:
            index = positions
        variables.append(_Variable(rv.name, index, dims, transform is None))
    return variables, completions


def _label_sets(variables: Sequence[_Variable], length: int) -> list[list[tuple[_Variable, int]]]:
    """Candidate sets of ``(variable, axis)`` sharing ``length`` labels: all of them, those of
    each ``dims`` name, and all but one of them; largest first."""
    everyone = [(v, v.axes(length)[-1]) for v in variables if v.axes(length)]
    sets = [everyone]
    names = {v.dims[a] for v, a in everyone if v.dims[a] is not None}
    for name in sorted(names):
        sets.append([(v, v.axes(length, name)[0]) for v in variables if v.axes(length, name)])
    if len(everyone) > 1:
        sets += [everyone[:i] + everyone[i + 1 :] for i in range(len(everyone))]
    unique, seen = [], set()
    for candidate in sets:
        key = tuple(sorted((v.name, a) for v, a in candidate))
        if candidate and key not in seen:
            seen.add(key)
            unique.append(candidate)
    return sorted(unique, key=len, reverse=True)


def _factor(kind: str, members: Sequence[tuple[_Variable, int]]) -> GroupFactor:
    slots = np.concatenate([v.slots(a) for v, a in members], axis=1)
    names = ", ".join(v.name for v, _ in members)
    what = "labels permuted" if kind == "permute" else "signs flipped"
    return GroupFactor(kind, slots, f"{names}: {slots.shape[0]} {what}")


def symmetry_test_points(
    center: np.ndarray, pool: np.ndarray | None, logp, n: int = TEST_POINTS
) -> np.ndarray:
    """Up to ``n`` points with a finite log density: prior draws (``pool``) first, then the
    center jittered (a fixed generator: the same model gets the same points)."""
    rng = np.random.default_rng(20241002)
    rows = [] if pool is None else [pool[:n]]
    rows.append(center + 0.5 * rng.standard_normal((n, center.size)))
    points = np.vstack(rows)
    with np.errstate(all="ignore"):
        finite = np.isfinite(logp(points))
    return points[finite][:n]


class _Collected:
    """Factors of one group as they are confirmed; each fits only where it composes with the
    others into uniformly drawn elements (disjoint cells, or a flip of a permutation's very
    cells: the signed permutations)."""

    def __init__(self):
        self.factors: list[GroupFactor] = []
        self.permuted: set[int] = set()
        self.flipped: set[int] = set()
        self.permuted_sets: set[tuple[int, ...]] = set()

    def fits(self, factor: GroupFactor) -> bool:
        cells = set(factor.slots.ravel().tolist())
        if factor.kind == "permute":
            return self.permuted.isdisjoint(cells)
        if not self.flipped.isdisjoint(cells):
            return False
        return self.permuted.isdisjoint(cells) or tuple(sorted(cells)) in self.permuted_sets

    def add(self, factor: GroupFactor) -> None:
        self.factors.append(factor)
        cells = factor.slots.ravel().tolist()
        if factor.kind == "permute":
            self.permuted.update(cells)
            self.permuted_sets.add(tuple(sorted(cells)))
        else:
            self.flipped.update(cells)

    def group(self, dim: int, completions) -> SymmetryGroup | None:
        permutes = [f for f in self.factors if f.kind == "permute"]
        flips = [f for f in self.factors if f.kind == "flip"]
        factors = tuple(permutes + flips)  # flip after permute: a signed permutation
        return SymmetryGroup(dim, tuple(completions), factors) if factors else None


@dataclass(frozen=True)
class Symmetries:
    """What :func:`find_symmetries` found.

    Attributes
    ----------
    exact : SymmetryGroup or None
        Symmetries of the log density: draws are reported under a random element, the chain
        keeps its own copy (the evidence counts every copy).
    near : SymmetryGroup or None
        Maps that change the log density by at most
        :data:`~pymc_dilation.engine.symmetry.NEAR_NATS` at the test points (a symmetric
        likelihood under a prior that is not): half of the paths start from mirrored centers
        when they move the Laplace mode to another mode, so the map finds and weighs the
        mirrored modes; ``sample_dilation`` also proposes them to its particles (exact
        Metropolis–Hastings).
    """

    exact: SymmetryGroup | None = None
    near: SymmetryGroup | None = None

    def describe(self) -> list[str]:
        out = [] if self.exact is None else self.exact.describe()
        if self.near is not None:
            out += [f"{text} (nearly)" for text in self.near.describe()]
        return out

    def __bool__(self) -> bool:
        return self.exact is not None or self.near is not None


def _candidates(variables: Sequence[_Variable]) -> list[list[GroupFactor]]:
    """Candidate factors, one list per question (largest variable sets first): label
    permutations of each length, sign flips of labels among untransformed variables, and
    sign flips of single untransformed variables and of pairs."""
    questions = []
    for length in sorted({n for v in variables for n in v.index.shape if n >= 2}):
        questions.append([_factor("permute", m) for m in _label_sets(variables, length)])
    signed = [v for v in variables if v.signed]
    for length in sorted({n for v in signed for n in v.index.shape}):
        questions.append([_factor("flip", m) for m in _label_sets(signed, length)])
    whole = [(v,) for v in signed]
    if len(signed) <= MAX_PAIRED_SIGNS:
        whole += list(combinations(signed, 2))
    for group in whole:
        cells = np.concatenate([v.index.ravel() for v in group])
        names = ", ".join(v.name for v in group)
        questions.append([GroupFactor("flip", cells[None], f"{names}: sign flipped")])
    return questions


def find_symmetries(model, logp, extra: np.ndarray, points: np.ndarray) -> Symmetries:
    """The symmetries (exact and near) of the sampled variables' log density.

    Parameters
    ----------
    model : pymc.Model
    logp : ModelLogp
        The compiled log density (sampler coordinates).
    extra : numpy.ndarray
        Values of the other free variables (and centering weights), fixed.
    points : numpy.ndarray
        ``(n, d)`` points with a finite log density where candidates are tested
        (:func:`symmetry_test_points`).

    Notes
    -----
    Label permutations of every length are tried first (for each length the largest set of
    variables that is a symmetry wins), then sign flips of labels among untransformed
    variables, then sign flips of single untransformed variables and of pairs. A candidate
    that is not exact but changes the log density little (:class:`Symmetries`) becomes a near
    symmetry when no candidate of its question is exact.
    """
    variables, completions = _variables(model, logp) if len(points) else ([], [])
    exact, near = _Collected(), _Collected()

    def density(xs):
        return logp.logp_grad_batch(xs, extra)[0]

    for question in _candidates(variables):
        near_pick = None
        for factor in question:
            if not (exact.fits(factor) or near.fits(factor)):
                continue
            found = invariance(factor, logp.dim, completions, density, points)
            if found.exact and exact.fits(factor):
                exact.add(factor)
                near_pick = None
                break
            if found.near and near_pick is None and near.fits(factor):
                near_pick = factor
        if near_pick is not None:
            near.add(near_pick)
    return Symmetries(exact.group(logp.dim, completions), near.group(logp.dim, completions))


def detect_symmetries(
    model, logp, extra: np.ndarray, center: np.ndarray, pool: np.ndarray | None, owner: str
) -> Symmetries:
    """:func:`find_symmetries` at :func:`symmetry_test_points` about ``center`` (prior draws
    ``pool`` first), announced in PyMC's log on behalf of ``owner``."""
    points = symmetry_test_points(center, pool, lambda xs: logp.logp_grad_batch(xs, extra)[0])
    found = find_symmetries(model, logp, extra, points)
    announce(found, owner)
    return found


def _count(n: int) -> str:
    """``n`` as a log line can hold it: digits up to a million, else ``"about 5.9e+185"``
    (99 permuted and flipped labels have 186 digits of copies)."""
    return str(n) if n <= 10**6 else f"about {float(n):.1e}" if n < 1e308 else "more than 1e308"


def announce(found: Symmetries, owner: str) -> None:
    """Say in PyMC's log which symmetries the sampler uses."""
    if found.exact is not None:
        _log.info(
            "%s: the posterior is unchanged by %s (%s copies of each mode); every draw is "
            "reported under a random one of these symmetries (exact Metropolis-Hastings "
            "jumps).",
            owner,
            "; ".join(found.exact.describe()),
            _count(found.exact.order),
        )
    if found.near is not None:  # internal: they only choose where some tuning paths start
        _log.debug(
            "%s: the posterior changes little under %s; half of the tuning paths start from "
            "centers mirrored by them, so that mirrored modes are found and weighed.",
            owner,
            "; ".join(found.near.describe()),
        )
