"""A Laplace approximation of the target: its mode and a dense preconditioner.

The population engine runs its Langevin dynamics in *whitened* coordinates ``z`` with
``x = mode + root @ z``, where ``root @ root.T`` is the inverse of the negative Hessian at the
mode. This is an affine change of variables, and affine maps commute with dilation: the dilation
path of the whitened target about ``z_c`` is the image of the path about ``c``. So the path is
unchanged; only the geometry of the Langevin steps is, exactly as with a dense mass matrix.
Without it, posteriors whose scales differ by orders of magnitude (regressions on unscaled
predictors) force one step size to suit the narrowest direction, and particles cannot follow the
path in the others.

The mode is found by BFGS from a starting point (one evaluation per call, no particles), then
polished by Newton steps; the Hessian comes from central differences of the exact gradient
(``2 d`` rows in one batched call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import linalg, optimize, sparse

from pymc_dilation.engine.hessian_free import halved_steps

__all__ = [
    "LaplaceApproximation",
    "laplace_approximation",
    "newton_polish",
    "singular_optimum",
    "reference_scale_approximation",
    "root_inverse",
    "root_log_det",
    "triangular_form",
    "upper_covariance_root",
]

BatchLogpGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
DENSE_BFGS_MAX_DIM = 50
"""Above this dimension the optimisation is limited-memory BFGS."""


@dataclass(frozen=True)
class LaplaceApproximation:
    """A Gaussian approximation ``N(mode, root @ root.T)`` of the target.

    Attributes
    ----------
    mode : numpy.ndarray
        The optimum reached, ``(d,)``.
    root : numpy.ndarray
        ``(d, d)`` square root of the covariance ``root @ root.T``: the inverse negative
        Hessian at ``mode``, its eigenvalues made positive.
    n_grad : int
        Gradient evaluations spent (optimisation and Hessian).
    converged : bool
        Whether a finite mode and curvature were found.
    """

    mode: np.ndarray
    root: np.ndarray
    n_grad: int
    converged: bool

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``(shift, root)`` of the map ``x = shift + root @ z`` to the target's coordinates."""
        return self.mode, self.root

    def to_density(self, z: np.ndarray) -> np.ndarray:
        """Whitened points ``(..., d)`` to the target's coordinates."""
        return self.mode + z @ self.root.T

    def to_whitened(self, x: np.ndarray) -> np.ndarray:
        """Target points ``(..., d)`` to whitened coordinates."""
        rhs = (np.atleast_2d(x) - self.mode).T
        triangle = self._triangle
        if triangle is not None:  # a Cholesky root: a triangular solve, O(d²) a point
            root, lower, order = triangle
            rhs = rhs if order is None else rhs[order]
            z = linalg.solve_triangular(root, rhs, lower=lower, check_finite=False).T
        else:
            z = np.linalg.solve(self.root, rhs).T
        return np.ascontiguousarray(z.reshape(np.shape(x)))

    @cached_property
    def _triangle(self) -> tuple[np.ndarray, bool, np.ndarray | None] | None:
        """See :func:`_ordered_triangle`."""
        return _ordered_triangle(self.root)

    def whiten(self, logp_grad: BatchLogpGrad) -> Whitened:
        """The batched log density in whitened coordinates (gradient by the chain rule); a
        log density already whitened is whitened once, by the composed map."""
        if isinstance(logp_grad, Whitened):
            return Whitened(
                logp_grad.base,
                logp_grad.shift + logp_grad.root @ self.mode,
                logp_grad.root @ self.root,
            )
        return Whitened(logp_grad, self.mode, self.root)


def triangular_form(root: np.ndarray) -> tuple[np.ndarray | None, bool] | None:
    """``(order, lower)`` when the rows ``root[order]`` form a lower (``lower``) or upper
    triangular matrix with a nonzero diagonal (``order`` None: ``root`` itself is); None when
    no row order does (an eigenvector root).

    A Cholesky root taken in another coordinate order (see :func:`_sparse_root`) is such a
    row-permuted triangle: products and solves with it cost what a triangle's do. Row ``r``
    of an upper triangle starts (a lower one ends) at column ``r``, so the order is read off
    where each row's nonzeros start (end), in ``O(d²)``.
    """
    nonzero = np.asarray(root) != 0
    dim = len(nonzero)
    if dim == 0 or not nonzero.any(axis=1).all():
        return None
    first = np.argmax(nonzero, axis=1)
    last = dim - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    identity = np.arange(dim)
    for lower, diagonal in ((False, first), (True, last)):
        order = np.argsort(diagonal, kind="stable")
        if np.array_equal(diagonal[order], identity):
            return (None if np.array_equal(order, identity) else order), lower
    return None


def _ordered_triangle(root: np.ndarray) -> tuple[np.ndarray, bool, np.ndarray | None] | None:
    """``(root[order], lower, order)`` for a root whose rows in ``order`` form a triangle
    (``order`` None: the root itself; see :func:`triangular_form`), else None."""
    form = triangular_form(root)
    if form is None:
        return None
    order, lower = form
    return (root if order is None else root[order]), lower, order


TRIANGULAR_MIN_DIM = 100
"""From this dimension on, a triangular root multiplies batches of rows by BLAS's triangular
product (``trmm``), half the work of a general one (one thread, 128 rows: 1.5 times faster at
d = 500, 1.6 at 1005; slower below about 100), and a sparse one by a sparse product."""
SPARSE_ROOT_DENSITY = 0.1
"""Share of nonzero entries at most for a root to be applied as a sparse matrix, and for
:func:`laplace_approximation` to prefer the Cholesky root of another coordinate order (see
:func:`_sparse_root`)."""


@dataclass(frozen=True)
class Whitened:
    """A batched log density ``base`` in the coordinates ``z`` of ``x = shift + root z``."""

    base: BatchLogpGrad
    shift: np.ndarray
    root: np.ndarray

    @cached_property
    def _sparse(self) -> tuple[sparse.csr_array, sparse.csr_array] | None:
        """``(root, root.T)`` as sparse matrices when at most :data:`SPARSE_ROOT_DENSITY` of
        the root's entries are nonzero (from :data:`TRIANGULAR_MIN_DIM` on), else None."""
        dim = len(self.root)
        if dim < TRIANGULAR_MIN_DIM or np.count_nonzero(self.root) > SPARSE_ROOT_DENSITY * dim**2:
            return None
        return sparse.csr_array(self.root), sparse.csr_array(self.root.T)

    @cached_property
    def _triangle(self) -> tuple[np.ndarray, bool, np.ndarray | None] | None:
        """``(root[order] in Fortran order, lower, order)`` when the root is a triangle, its
        rows in ``order`` (see :func:`triangular_form`), and large enough for
        :data:`TRIANGULAR_MIN_DIM`, else None."""
        triangle = None if len(self.root) < TRIANGULAR_MIN_DIM else _ordered_triangle(self.root)
        if triangle is None:
            return None
        root, lower, order = triangle
        return np.asfortranarray(root), lower, order

    def _times(self, rows: np.ndarray, transpose: bool) -> np.ndarray:
        """``rows @ root.T`` (``transpose``) or ``rows @ root``, for rows ``(n, d)``."""
        rows = np.asarray(rows, dtype=float)
        if rows.ndim != 2 or len(rows) < 2:
            return rows @ (self.root.T if transpose else self.root)
        if self._sparse is not None:
            root, root_t = self._sparse
            return np.ascontiguousarray((root @ rows.T if transpose else root_t @ rows.T).T)
        if self._triangle is None:
            return rows @ (self.root.T if transpose else self.root)
        root, lower, order = self._triangle
        # (rows @ root.T).T = root @ rows.T; (rows @ root).T = root.T @ rows.T. rows.T is a
        # Fortran-ordered view, so BLAS reads it in place. With the triangle's rows in
        # ``order`` (root[order] = T): x = root z has x[order] = T z, and rootᵀ g = Tᵀ g[order].
        if order is not None and not transpose:
            rows = rows[:, order]
        product = linalg.blas.dtrmm(1.0, root, rows.T, lower=lower, trans_a=not transpose)
        if order is not None and transpose:
            out = np.empty((product.shape[1], product.shape[0]))
            out[:, order] = product.T
            return out
        return np.ascontiguousarray(product.T)

    def to_density(self, zs: np.ndarray) -> np.ndarray:
        """Whitened points ``(n, d)`` to the base density's coordinates."""
        return self.shift + self._times(zs, transpose=True)

    def __call__(self, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lp, grad = self.base(self.to_density(zs))
        with np.errstate(invalid="ignore", over="ignore"):  # a non-finite row is rejected
            return lp, self._times(grad, transpose=False)


def _negative_logp(logp_grad: BatchLogpGrad, counter: list[int]):
    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        counter[0] += 1
        try:
            lp, grad = logp_grad(x[None, :])
        except Exception:  # a model that raises outside its support (ParameterValueError)
            return np.inf, np.zeros_like(x)
        lp, grad = float(np.asarray(lp).reshape(-1)[0]), np.asarray(grad, dtype=float).ravel()
        if not (np.isfinite(lp) and np.all(np.isfinite(grad))):
            return np.inf, np.zeros_like(x)
        return -lp, -grad

    return fun


def _hessian(logp_grad: BatchLogpGrad, x: np.ndarray) -> np.ndarray:
    """The finite-difference Hessian at one point (see :func:`_hessians`)."""
    return _hessians(logp_grad, x[None, :])[0]


CHORD_DECREMENT = 1e-4
"""Squared Newton decrement below which the next Newton step of
:func:`laplace_approximation` reuses the curvature it was taken with."""
CURVATURE_FLOOR = 1e-8
"""Smallest curvature kept, relative to the largest (see :func:`_root_covariance`)."""
EIGEN_ROOT_MAX_DIM = 1000
"""Above this dimension a precision that is not positive definite and well conditioned is
shifted (see :func:`_shifted_cholesky_root`) rather than eigendecomposed: at d = 2900 each
eigendecomposition took 30 s, and the Newton steps of one Laplace approximation made 20."""


def _root_covariance(hess: np.ndarray) -> np.ndarray:
    """A square root ``R`` of ``(-hess)^-1`` (``R Rᵀ = (-hess)^-1``); ``hess`` may be one
    ``(d, d)`` matrix or a stack ``(k, d, d)``.

    Where ``-hess`` is positive definite with a reciprocal condition number of at least
    :data:`CURVATURE_FLOOR`, ``R = L^-T`` from its Cholesky factor ``L``; elsewhere the
    eigenvectors scaled by the curvatures made positive and floored at
    :data:`CURVATURE_FLOOR` of the largest (above :data:`EIGEN_ROOT_MAX_DIM`: the Cholesky
    root of ``-hess`` shifted until positive definite). The first two are exact square roots
    where both apply; the Cholesky one costs a seventh of the eigendecomposition (d = 2900:
    4.6 s against 32 s).
    """
    if hess.ndim == 2:
        return _root_covariance(hess[None])[0]
    return _roots_and_definite(hess)[0]


def _roots_and_definite(hess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The roots of :func:`_root_covariance` for a stack ``(k, d, d)``, and whether each
    ``-hess`` was positive definite and well conditioned (the exact Cholesky root)."""
    precision = -hess
    roots = np.empty_like(precision)
    definite = np.zeros(len(precision), dtype=bool)
    for i, matrix in enumerate(precision):  # one per mode, each O(d³)
        root = _upper_root(matrix)
        definite[i] = root is not None
        roots[i] = root if root is not None else _fallback_root(matrix)
    return roots, definite


def _upper_root(precision: np.ndarray) -> np.ndarray | None:
    """``L^-T`` for the Cholesky factor ``L`` of ``precision`` if it is positive definite with
    a reciprocal condition number of at least :data:`CURVATURE_FLOOR` (LAPACK's estimate),
    else None."""
    lower, info = linalg.lapack.dpotrf(precision, lower=1, clean=1)
    if info != 0:
        return None
    norm = float(np.max(np.sum(np.abs(precision), axis=0)))
    rcond, info = linalg.lapack.dpocon(lower, norm, uplo="L")
    if info != 0 or not rcond >= CURVATURE_FLOOR:
        return None
    return linalg.solve_triangular(lower, np.eye(len(lower)), lower=True, trans="T")


def _fallback_root(precision: np.ndarray) -> np.ndarray:
    """The root of a precision that is not positive definite and well conditioned: shifted
    (above :data:`EIGEN_ROOT_MAX_DIM`) or with floored eigenvalues."""
    if len(precision) > EIGEN_ROOT_MAX_DIM:
        root = _shifted_cholesky_root(precision)
        if root is not None:
            return root
    curvature, vectors = np.linalg.eigh(precision)
    curvature = np.abs(curvature)
    floor = CURVATURE_FLOOR * max(float(curvature.max()), 1e-300)
    return vectors / np.sqrt(np.maximum(curvature, floor))[None, :]


def _shifted_cholesky_root(precision: np.ndarray) -> np.ndarray | None:
    """The Cholesky root of ``precision + t I``, ``t`` growing tenfold from
    :data:`CURVATURE_FLOOR` of the largest diagonal entry until that is positive definite and
    well conditioned (a modified Newton step: an ascent direction at a saddle too); None when
    no shift up to that entry does."""
    scale = float(np.max(np.abs(np.diag(precision))))
    if not np.isfinite(scale) or scale <= 0.0:
        return None
    shift = CURVATURE_FLOOR * scale
    while shift <= scale:
        root = _upper_root(precision + shift * np.eye(len(precision)))
        if root is not None:
            return root
        shift *= 10.0
    return None


def laplace_approximation(
    logp_grad: BatchLogpGrad, start: np.ndarray, max_iter: int = 2000, newton_steps: int = 20
) -> LaplaceApproximation:
    """Mode and curvature of a log density, for whitening the population engine.

    BFGS from ``start``, then Newton steps with the finite-difference Hessian (halved until
    they improve the log density): BFGS alone stalls on posteriors whose scales differ by
    many orders of magnitude, where a Newton step on a near-quadratic log density lands on the
    mode at once.

    Parameters
    ----------
    logp_grad : callable
        ``(n, d) -> ((n,), (n, d))``.
    start : numpy.ndarray
        Where the optimisation starts (a point with a finite log density).
    max_iter : int
        BFGS iterations at most; 0 for Newton steps only (a start already near the optimum).
    newton_steps : int
        Newton steps at most after BFGS.

    Returns
    -------
    LaplaceApproximation
        Falls back to the identity (``root = I``, ``mode = start``) when the optimum or its
        curvature is not finite. Directions of non-negative curvature (a saddle, a flat ridge)
        keep their absolute curvature, floored at ``1e-8`` of the largest, so the map is always
        invertible.
    """
    start = np.asarray(start, dtype=float)
    dim = start.size
    counter = [0]
    fun = _negative_logp(logp_grad, counter)
    if max_iter > 0:
        # BFGS keeps a dense d x d inverse Hessian, updated in Python: at d = 1000 its updates
        # took 50 s of a 57 s Laplace step (745 iterations), at d = 175 (radon) 1.9 of 2.0 s;
        # L-BFGS costs O(d) per iteration, and the Newton steps below finish the job on
        # near-quadratic densities.
        method = "BFGS" if dim <= DENSE_BFGS_MAX_DIM else "L-BFGS-B"
        result = optimize.minimize(
            fun, start, jac=True, method=method, options={"maxiter": max_iter, "gtol": 1e-6}
        )
        mode, neg_lp, neg_grad = result.x, result.fun, result.jac
    else:
        mode, (neg_lp, neg_grad) = start, fun(start)
    if not np.isfinite(neg_lp):
        mode, (neg_lp, neg_grad) = start, fun(start)
    root = None
    reuse = False
    for newton_step in range(newton_steps + 1):
        if not reuse:
            try:
                hess = _hessian(logp_grad, mode)
            except Exception:  # a model that raises beside its mode
                break
            counter[0] += 2 * dim
            if not np.all(np.isfinite(hess)) or not np.any(hess):
                break
            root = _root_covariance(hess)
        step = -root @ (root.T @ neg_grad)
        decrement = float(-neg_grad @ step)  # squared Newton decrement
        if decrement < 1e-10 or newton_step == newton_steps:
            break
        # A step of under a hundredth of an sd: the curvature where it lands is this one (a
        # chord step reuses it), and a Hessian is 2d gradients and a factorisation (0.2 s at
        # d = 1005, where the third of three Newton steps had started 0.001 sd from the mode).
        reuse = decrement < CHORD_DECREMENT
        for _ in range(30):  # halve the step until it improves
            candidate = mode + step
            cand_lp, cand_grad = fun(candidate)
            if cand_lp <= neg_lp:
                mode, neg_lp, neg_grad = candidate, cand_lp, cand_grad
                break
            step = step / 2.0
        else:
            break
    if root is None:
        return LaplaceApproximation(start, np.eye(dim), counter[0], False)
    sparser = _sparse_root(hess)
    return LaplaceApproximation(
        mode, root if sparser is None else sparser, counter[0], bool(np.isfinite(neg_lp))
    )


def _sparse_root(hess: np.ndarray) -> np.ndarray | None:
    """A root of ``(-hess)⁻¹`` that is sparse where the precision is, or None.

    The Cholesky root ``L⁻ᵀ`` fills in wherever a coordinate that many others are coupled to
    comes first: a hierarchy's hyperparameters, declared before the groups, couple to every
    group, and its root is a dense triangle (a 500-group hierarchy: 1.2 % of the Hessian's
    entries nonzero, half of the root's), so every evaluation in whitened coordinates costs a
    ``d × d`` product. Ordered by how many coordinates each is coupled to, fewest first (the
    groups, then the hyperparameters), the factor has no fill-in and its inverse is sparse:
    the groups' blocks and a few dense rows. The root's rows are put back in the original
    order (a row-permuted triangle, see :func:`triangular_form`). Taken from
    :data:`TRIANGULAR_MIN_DIM` on, where the precision and the root hold at most
    :data:`SPARSE_ROOT_DENSITY` of their entries and the precision is positive definite.
    """
    dim = len(hess)
    coupled = np.asarray(hess) != 0
    if dim < TRIANGULAR_MIN_DIM or np.count_nonzero(coupled) > SPARSE_ROOT_DENSITY * dim**2:
        return None
    order = np.argsort(np.count_nonzero(coupled, axis=1), kind="stable")
    upper = _upper_root(-hess[np.ix_(order, order)])
    if upper is None or np.count_nonzero(upper) > SPARSE_ROOT_DENSITY * dim**2:
        return None
    root = np.empty_like(upper)
    root[order] = upper
    return root


SINGULAR_DISTANCE = 6.0
"""Reference sds beyond which an optimum lies outside the reference draws' range (see
:func:`singular_optimum`)."""
SINGULAR_NARROWING = 1e-3
"""Laplace sd over reference sd below which a coordinate's curvature is implausibly sharp (a
posterior sd a thousandth of the prior's takes about a million observations' worth of
information; see :func:`singular_optimum`)."""


def singular_optimum(laplace: LaplaceApproximation, reference: np.ndarray) -> bool:
    """Whether ``laplace`` sits on a singularity of the density rather than on a mode.

    A density can be unbounded where a scale goes to zero: a factor model whose item noise sd
    goes to 0 as the abilities fit that item exactly, a centered random walk whose step sd
    goes to 0. The optimiser then stops far down that neck, where the density is huge but
    the mass is small. Such an optimum lies outside the range of ``reference`` (prior draws,
    ``(n, d)``): in some coordinate it is more than :data:`SINGULAR_DISTANCE` of their sds from
    their mean, *and* the Laplace sd there is below :data:`SINGULAR_NARROWING` of theirs.
    Measured: the identified factor model of the Bayesian-workflow tutorial, 12 sds and
    4e-5; stochastic volatility on 250 returns, 8 sds and 2e-6; every sound model tried
    (radon, 20- and 100-group hierarchies, a 200-D regression, eight schools, gp_pois_regr,
    a 100-D mixture) at most 2.1 sds and at least 2e-3.
    """
    if not laplace.converged or reference is None or len(reference) < 2:
        return False
    sd = reference.std(axis=0)
    sd = np.where(sd > 0, sd, np.inf)
    distance = np.abs(laplace.mode - reference.mean(axis=0)) / sd
    narrowing = np.sqrt(np.sum(laplace.root**2, axis=1)) / sd
    return bool(np.any((distance > SINGULAR_DISTANCE) & (narrowing < SINGULAR_NARROWING)))


def reference_scale_approximation(
    start: np.ndarray, reference: np.ndarray, n_grad: int = 0
) -> LaplaceApproximation:
    """A Gaussian at ``start`` with the reference draws' marginal sds (``converged=False``):
    the whitening used in place of a :func:`singular_optimum`'s curvature; ``n_grad`` carries
    the evaluations already spent."""
    sd = reference.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return LaplaceApproximation(np.asarray(start, float), np.diag(sd), n_grad, False)


def _hessians(logp_grad: BatchLogpGrad, xs: np.ndarray) -> np.ndarray:
    """Central finite-difference Hessians ``(k, d, d)`` of the gradient at the rows of ``xs``,
    in one batched call (all NaN for a row whose stencil leaves the support)."""
    h = 1e-5 * np.maximum(1.0, np.abs(xs))
    if isinstance(logp_grad, Whitened):
        # The stencil's points are x ± h root[:, i]: only the gradients' differences are
        # mapped, one d x d product per point where mapping every stencil point took four
        # (d = 2900: minutes per first draw).
        return _central_hessians(logp_grad.base, logp_grad.to_density(xs), h, logp_grad.root)
    return _central_hessians(logp_grad, xs, h)


def _central_hessians(
    logp_grad: BatchLogpGrad, xs: np.ndarray, h: np.ndarray, root: np.ndarray | None = None
) -> np.ndarray:
    """Central differences of the gradient at ``xs ± h_i e_i`` or, with ``root``, along its
    columns ``xs ± h_i root[:, i]``, the differences mapped by ``root`` (the Hessian in the
    coordinates ``z`` of ``x = root z``)."""
    k, dim = xs.shape
    directions = np.eye(dim) if root is None else root.T  # row i: the direction of step i
    steps = h[:, :, None] * directions[None]  # (k, d, d)
    rows = np.concatenate([xs[:, None, :] + steps, xs[:, None, :] - steps], axis=1)
    with np.errstate(all="ignore"):
        lps, grads = logp_grad(rows.reshape(-1, dim))
        lps = np.asarray(lps, dtype=float).reshape(k, 2 * dim)
        grads = np.asarray(grads, dtype=float).reshape(k, 2 * dim, dim)
        change = grads[:, :dim] - grads[:, dim:]
        if root is not None:
            change = change @ root
        hess = change / (2.0 * h[:, :, None])
    hess = 0.5 * (hess + np.swapaxes(hess, 1, 2))
    hess[~np.all(np.isfinite(lps), axis=1)] = np.nan
    return hess


def newton_polish(
    logp_grad: BatchLogpGrad, starts: np.ndarray, newton_steps: int = 5, halvings: int = 30
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Newton steps from every row of ``starts`` at once, and the local Gaussians there.

    The batched form of ``laplace_approximation(logp_grad, start, max_iter=0,
    newton_steps=newton_steps)`` for each row (same steps, halvings and fallbacks), with one
    batched call per Newton step for the Hessians and one per halving round for the
    candidates, instead of a Python loop over the rows.

    Returns
    -------
    modes : numpy.ndarray
        ``(k, d)`` polished points (a row's start where no curvature was found).
    roots : numpy.ndarray
        ``(k, d, d)`` square roots of the inverse negative Hessians (the identity where no
        curvature was found).
    converged : numpy.ndarray
        ``(k,)`` whether a finite curvature was found and the log density is finite.
    calls : int
        Log density and gradient evaluations, all rows together.

    Rows are polished in batches whose ``(k, d, d)`` Hessians fit in :data:`POLISH_MEMORY`.
    """
    starts = np.asarray(starts, dtype=float)
    k, dim = starts.shape
    batch = max(1, POLISH_MEMORY // (8 * dim * dim))
    if k > batch:
        parts = [
            _newton_polish(logp_grad, starts[i : i + batch], newton_steps, halvings)
            for i in range(0, k, batch)
        ]
        return (
            np.concatenate([part[0] for part in parts]),
            np.concatenate([part[1] for part in parts]),
            np.concatenate([part[2] for part in parts]),
            sum(part[3] for part in parts),
        )
    return _newton_polish(logp_grad, starts, newton_steps, halvings)


POLISH_MEMORY = 2**30
"""Bytes of one batch's ``(k, d, d)`` Hessians in :func:`newton_polish` (the roots and the
finite-difference workspace take as much again): at d = 2900 a Hessian is 67 MB, and a probe
whose 128 ascents ended apart would have needed about 17 GB at once."""


def _newton_polish(logp_grad, starts: np.ndarray, newton_steps: int, halvings: int):
    """:func:`newton_polish` for one batch of rows."""
    k, dim = starts.shape
    modes = starts.copy()
    with np.errstate(all="ignore"):
        lps, grads = logp_grad(modes)
    lps = np.asarray(lps, dtype=float).copy()
    grads = np.asarray(grads, dtype=float).copy()
    bad = ~(np.isfinite(lps) & np.all(np.isfinite(grads), axis=1))
    lps[bad], grads[bad] = -np.inf, 0.0
    calls = k
    roots = np.broadcast_to(np.eye(dim), (k, dim, dim)).copy()
    found = np.zeros(k, dtype=bool)
    active = np.ones(k, dtype=bool)
    indefinite = np.zeros(k, dtype=int)
    for newton_step in range(newton_steps + 1):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        hess = _hessians(logp_grad, modes[rows])
        calls += 2 * dim * rows.size
        usable = np.all(np.isfinite(hess), axis=(1, 2)) & np.any(hess != 0, axis=(1, 2))
        active[rows[~usable]] = False
        rows, hess = rows[usable], hess[usable]
        if rows.size == 0:
            break
        root, definite = _roots_and_definite(hess)
        roots[rows], found[rows] = root, True
        # Newton step on the negative log density: -R Rᵀ ∇(-lp) = R Rᵀ ∇lp
        step = np.einsum("kij,kj->ki", root, np.einsum("kji,kj->ki", root, grads[rows]))
        decrement = np.einsum("ki,ki->k", grads[rows], step)
        # A row whose curvature is not negative definite a second time is no optimum being
        # polished (a saddle, or a ridge where a scale goes to 0): it stops where it is, and
        # map_modes judges it by its decrement. Each such step cost an eigendecomposition:
        # 163 of a 521-parameter factor model's 214 s of tuning population.
        indefinite[rows[~definite]] += 1
        done = (decrement < 1e-10) | (newton_step == newton_steps) | (indefinite[rows] >= 2)
        active[rows[done]] = False
        rows, step = rows[~done], step[~done]
        rows, spent = halved_steps(logp_grad, modes, lps, grads, rows, step, halvings)
        calls += spent
        active[rows] = False  # no improvement after every halving: stop there
    modes[~found] = starts[~found]
    converged = found & np.isfinite(lps)
    return modes, roots, converged, calls


FLAT_REACH = (1e3, 1e6)
"""Distances at which :func:`flat_directions` looks for the log density to have fallen, in
units of the sd that the curvature floor of :func:`laplace_approximation` gives a direction
(10⁴ times the narrowest sd), or of one when no curvature was found."""


def flat_directions(
    logp_grad: BatchLogpGrad, laplace: LaplaceApproximation, drop: float = 1.0
) -> np.ndarray:
    """Unit directions ``(m, d)`` along which the log density does not fall from the mode.

    Only directions without curvature are probed: those whose curvature
    :func:`laplace_approximation` floored, or every coordinate axis when it found no finite
    curvature at all. Along each, the log density is evaluated on both sides at the distances
    :data:`FLAT_REACH` (see there); a
    direction is flat when, on one side, it is nowhere more than ``drop`` nats below the value
    at the mode. A proper density falls far below its peak there (a Cauchy by about 28 nats at
    10⁶ sds); an improper one (a flat prior no data identify) does not. Two batched calls.
    """
    dim = laplace.mode.size
    lp0, _ = logp_grad(laplace.mode[None, :])
    lp0 = float(np.asarray(lp0).reshape(-1)[0])
    if not np.isfinite(lp0):
        return np.zeros((0, dim))
    if laplace.converged:
        var, vecs = np.linalg.eigh(laplace.root @ laplace.root.T)
        floored = var >= 0.5e8 * var.min()
        if not floored.any():
            return np.zeros((0, dim))
        directions = vecs[:, floored].T
        scale = float(np.sqrt(var[floored].max()))
    else:
        directions, scale = np.eye(dim), 1.0
    reach = np.asarray(FLAT_REACH) * scale
    signs = np.array([1.0, -1.0])
    points = (
        laplace.mode[None, None, None, :]
        + signs[None, :, None, None] * reach[None, None, :, None] * directions[:, None, None, :]
    )
    with np.errstate(all="ignore"):
        lps = np.asarray(logp_grad(points.reshape(-1, dim))[0], dtype=float)
    lps = np.where(np.isfinite(lps) | (lps > 0), lps, -np.inf).reshape(len(directions), 2, -1)
    flat_side = np.all(lps >= lp0 - drop, axis=2)
    return directions[np.any(flat_side, axis=1)]


def upper_covariance_root(covariance: np.ndarray) -> np.ndarray | None:
    """An upper-triangular ``U`` with ``U Uᵀ = covariance``: the Cholesky factor of the
    coordinates taken in reverse order, reversed back (``J L J`` for ``J C J = L Lᵀ``); None
    when ``covariance`` is not positive definite."""
    try:
        lower = np.linalg.cholesky(covariance[::-1, ::-1])
    except np.linalg.LinAlgError:
        return None
    return np.ascontiguousarray(lower[::-1, ::-1])


def root_log_det(roots: np.ndarray) -> np.ndarray:
    """``log |det R|`` of each root (``(d, d)`` or ``(K, d, d)``): from the diagonal of a
    triangular one (``O(d)``; most roots are Cholesky roots), by LU otherwise."""
    stacked = roots.reshape(-1, *roots.shape[-2:])
    out = np.empty(len(stacked))
    for k, root in enumerate(stacked):  # one per mode
        triangle = _ordered_triangle(root)
        if triangle is not None:  # a permutation of rows changes the determinant's sign only
            out[k] = np.sum(np.log(np.abs(np.diagonal(triangle[0]))))
        else:
            out[k] = np.linalg.slogdet(root)[1]
    return out.reshape(roots.shape[:-2])


def root_inverse(roots: np.ndarray) -> np.ndarray:
    """``R⁻¹`` of each root (``(d, d)`` or ``(K, d, d)``): the reciprocal diagonal where the
    root is diagonal (the identity root of a known optimum in its own whitened coordinates:
    0.73 s as a triangle at d = 2900), a triangular inversion where it is triangular (a third
    of an LU inversion's work; 0.11 s at d = 1005), LU otherwise."""
    stacked = roots.reshape(-1, *roots.shape[-2:])
    out = np.empty_like(stacked, dtype=float)
    for k, root in enumerate(stacked):  # one per mode
        diagonal = np.diagonal(root)
        if np.all(diagonal != 0) and np.count_nonzero(root) == len(diagonal):  # diagonal
            out[k] = 0.0
            np.fill_diagonal(out[k], 1.0 / diagonal)
            continue
        triangle = _ordered_triangle(root)
        inverse, info = (None, 1)
        if triangle is not None:
            ordered, lower, order = triangle
            inverse, info = linalg.lapack.dtrtri(ordered, lower=int(lower))
            if info == 0 and order is not None:  # root = Q T: root⁻¹ = T⁻¹ Qᵀ
                inverse, unpermuted = np.empty_like(inverse), inverse
                inverse[:, order] = unpermuted
        out[k] = inverse if info == 0 else np.linalg.inv(root)
    return out.reshape(roots.shape)
