"""The chain's preconditioner: a diagonal scale plus a low-rank correction, learned from draws
*and* gradients.

A :class:`Metric` is the linear map ``x = R u`` from whitened coordinates ``u`` (where the kernel
moves with an identity mass matrix) to the density's coordinates ``x``, with

``R = diag(scale) (I + B diag(coef) Bᵀ)``,

``B`` a ``(d, k)`` matrix of orthonormal columns and ``coef > -1``. The covariance it stands
for is ``R Rᵀ = diag(scale) (I + B diag((1 + coef)² − 1) Bᵀ) diag(scale)``: in the coordinates
scaled by ``scale`` the covariance is the identity except along ``k`` directions, whose
variances are ``(1 + coef)²``. Applying ``R``, ``R⁻¹`` or their transposes costs ``O(d k)``: a
diagonal metric is ``k = 0``, a dense one ``k = d`` (``O(d²)``, as a Cholesky root), and in
between the rank is what the draws and gradients show is needed.

:func:`estimate_metric` is the estimator of nutpie's low-rank adaptation (Seyboldt et al.): for
a Gaussian the covariance of the gradients is the inverse covariance of the draws, so the
diagonal is ``(var(x) / var(∇ log p))^(1/4)`` (the geometric mean of both estimates of the
variance), and in the space those scales whiten, the span of the draws and gradients carries
the SPD geometric mean of the draws' covariance and the inverse of the gradients'; its
eigenvalues far from 1 give the low-rank correction. A window of ``n`` draws thus pins down
``2n`` directions, and the diagonal all of them, long before ``n`` reaches ``d``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import linalg

__all__ = [
    "Metric",
    "estimate_metric",
    "metric_from_covariance",
    "noise_cutoff",
    "whitened_variances",
]

EIGENVALUE_CUTOFF = 2.0
"""Eigenvalues of the whitened covariance within ``[1 / c, c]`` are left at 1 (nutpie's
default ``c``): a direction is corrected only when the diagonal misses it by a factor 2."""
REGULARIZATION = 1e-5
"""Added to both projected covariances before their geometric mean (nutpie's ``gamma``)."""


@dataclass(frozen=True)
class Metric:
    """``x = R u`` with ``R = diag(scale) (I + basis diag(coef) basisᵀ)``.

    Attributes
    ----------
    scale : numpy.ndarray
        ``(d,)`` positive scales.
    basis : numpy.ndarray
        ``(d, k)`` orthonormal columns, ``k`` from 0 (diagonal) to ``d`` (dense).
    coef : numpy.ndarray
        ``(k,)``: the standard deviation along each basis direction, minus 1 (``> -1``).
    """

    scale: np.ndarray
    basis: np.ndarray
    coef: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "scale", np.ascontiguousarray(self.scale, dtype=float))
        object.__setattr__(self, "coef", np.ascontiguousarray(self.coef, dtype=float))
        # (k, d) rows, contiguous: what the compiled kernels multiply with
        object.__setattr__(self, "basis_rows", np.ascontiguousarray(self.basis.T, dtype=float))

    @property
    def dim(self) -> int:
        return self.scale.shape[0]

    @property
    def rank(self) -> int:
        """Number of corrected directions ``k``."""
        return self.coef.shape[0]

    @cached_property
    def inverse_coef(self) -> np.ndarray:
        """The coefficients of ``R⁻¹ = (I + B diag(c') Bᵀ) diag(scale)⁻¹``."""
        return 1.0 / (1.0 + self.coef) - 1.0

    @cached_property
    def covariance_coef(self) -> np.ndarray:
        """The coefficients of ``R Rᵀ = diag(scale) (I + B diag(c'') Bᵀ) diag(scale)``."""
        return (1.0 + self.coef) ** 2 - 1.0

    def _mix(self, v: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """``(I + B diag(coef) Bᵀ) v`` for ``v`` of shape ``(..., d)``."""
        if self.rank == 0:
            return v
        return v + ((v @ self.basis) * coef) @ self.basis.T

    def to_density(self, u: np.ndarray) -> np.ndarray:
        """``R u`` (whitened points ``(..., d)`` to the density's coordinates)."""
        return self.scale * self._mix(u, self.coef)

    def to_whitened(self, x: np.ndarray) -> np.ndarray:
        """``R⁻¹ x``."""
        return self._mix(x / self.scale, self.inverse_coef)

    def gradient_to_whitened(self, grad: np.ndarray) -> np.ndarray:
        """``Rᵀ g``: the gradient in ``u`` of a density whose gradient in ``x`` is ``g``."""
        return self._mix(self.scale * grad, self.coef)

    def gradient_to_density(self, grad_u: np.ndarray) -> np.ndarray:
        """``R⁻ᵀ g_u``."""
        return self._mix(grad_u, self.inverse_coef) / self.scale

    def root(self) -> np.ndarray:
        """The dense ``(d, d)`` matrix ``R``."""
        return self.to_density(np.eye(self.dim)).T

    def covariance(self) -> np.ndarray:
        """The dense ``(d, d)`` covariance ``R Rᵀ``."""
        root = self.root()
        return root @ root.T

    @property
    def finite(self) -> bool:
        """Whether every part is finite (and the scales positive)."""
        return bool(
            np.all(np.isfinite(self.scale))
            and np.all(self.scale > 0)
            and np.all(np.isfinite(self.basis))
            and np.all(np.isfinite(self.coef))
        )

    @property
    def log_det_root(self) -> float:
        """``log |det R|``."""
        return float(np.sum(np.log(self.scale)) + np.sum(np.log1p(self.coef)))

    def refined(self, correction: Metric, max_rank: int, cutoff: float) -> Metric:
        """The metric ``R R_c`` (``correction`` estimated in this metric's whitened
        coordinates), refitted to the diagonal-plus-rank-``max_rank`` form.

        Exact when nothing is cut (``max_rank = d``, ``cutoff = 1``). When both are of low
        rank (``2k + k_c`` under half the dimension) the product's covariance is the identity
        plus rank ``2k + k_c`` in the scales ``scale · scale_c``, and its eigenpairs come from
        that subspace in ``O(d (2k + k_c)²)`` (:meth:`_refined_low_rank`; 1005 parameters,
        rank 78: 0.35 s -> ms); otherwise the dense ``d × d`` covariance is refitted, with the
        diagonal re-estimated from it and its precision (``O(d³)``).
        """
        if 2 * (2 * self.rank + correction.rank) < self.dim:
            return self._refined_low_rank(correction, max_rank, cutoff)
        root = self.root() @ correction.root()
        inverse = np.linalg.inv(root)
        covariance = root @ root.T
        precision_diag = np.sum(inverse * inverse, axis=0)
        return metric_from_covariance(covariance, np.diag(precision_diag), max_rank, cutoff)

    def _refined_low_rank(self, correction: Metric, max_rank: int, cutoff: float) -> Metric:
        """:meth:`refined` for low ranks, in the scales ``s · s_c``.

        With ``A = I + B C Bᵀ`` and ``F² = I + B_c E_c B_cᵀ`` (``E_c = (1 + C_c)² − 1``), the
        product's covariance in those scales is ``G F² Gᵀ`` with
        ``G = S_c⁻¹ A S_c = I + U C Vᵀ`` (``U = S_c⁻¹ B``, ``V = S_c B``): the identity plus
        ``U C Vᵀ + V C Uᵀ + U C VᵀV C Uᵀ + W E_c Wᵀ``, ``W = G B_c``, all in the span of
        ``[U, V, W]``.
        """
        dim = self.dim
        scale = self.scale * correction.scale
        coef = np.diag(self.coef)
        u = self.basis / correction.scale[:, None]
        v = self.basis * correction.scale[:, None]
        w = correction.basis + u @ (coef @ (v.T @ correction.basis))
        span = np.concatenate([u, v, w], axis=1)
        if span.shape[1] == 0:
            return Metric(scale, np.zeros((dim, 0)), np.zeros(0))
        q, _ = np.linalg.qr(span)
        qu, qv, qw = q.T @ u, q.T @ v, q.T @ w
        excess = (
            qu @ coef @ qv.T
            + qv @ coef @ qu.T
            + qu @ coef @ (v.T @ v) @ coef @ qu.T
            + (qw * ((1.0 + correction.coef) ** 2 - 1.0)) @ qw.T
        )
        eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (excess + excess.T))
        basis, new_coef = _select(1.0 + eigenvalues, q @ eigenvectors, max_rank, cutoff)
        return Metric(scale, np.ascontiguousarray(basis), new_coef)

    @classmethod
    def identity(cls, dim: int) -> Metric:
        """The unit metric."""
        return cls(np.ones(dim), np.zeros((dim, 0)), np.zeros(0))


def _select(eigenvalues: np.ndarray, eigenvectors: np.ndarray, max_rank: int, cutoff: float):
    """The eigenpairs furthest from 1 (in log), at most ``max_rank``, outside ``[1/c, c]``."""
    eigenvalues = np.clip(eigenvalues, 1e-10, None)  # round-off makes a PSD matrix's negative
    distance = np.abs(np.log(eigenvalues))
    order = np.argsort(-distance)[:max_rank]
    order = order[distance[order] > np.log(cutoff)]
    return eigenvectors[:, order], np.sqrt(eigenvalues[order]) - 1.0


def metric_from_covariance(
    covariance: np.ndarray,
    precision: np.ndarray | None = None,
    max_rank: int | None = None,
    cutoff: float = EIGENVALUE_CUTOFF,
) -> Metric:
    """The metric of a dense covariance (and its precision, when known), kept to ``max_rank``.

    The diagonal is ``(Σ_ii / P_ii)^(1/4)`` when the precision ``P`` is given (as
    :func:`estimate_metric` takes it from draws and gradients), ``√Σ_ii`` otherwise; the
    covariance's eigenpairs in the space it scales, furthest from 1 first, make the correction.
    With ``max_rank = d`` and ``cutoff = 1`` the metric is the covariance exactly.
    """
    dim = covariance.shape[0]
    max_rank = dim if max_rank is None else max_rank
    variances = np.clip(np.diag(covariance), 1e-300, None)
    if precision is None:
        scale = np.sqrt(variances)
    else:
        precision_diag = np.clip(np.diag(precision), 1e-300, None)
        scale = (variances / precision_diag) ** 0.25
    if max_rank == 0:
        return Metric(scale, np.zeros((dim, 0)), np.zeros(0))
    scaled = covariance / np.outer(scale, scale)
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (scaled + scaled.T))
    basis, coef = _select(eigenvalues, eigenvectors, max_rank, cutoff)
    return Metric(scale, np.ascontiguousarray(basis), coef)


def _spd_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The SPD geometric mean of ``a`` and ``b⁻¹``, given ``b``: the ``M`` with ``M b M = a``.

    With ``b = L Lᵀ`` (Cholesky), ``M = L⁻ᵀ (Lᵀ a L)^(1/2) L⁻¹``: one eigendecomposition
    instead of the two of ``b``'s square root (an eigendecomposition of a 1005 × 1005 matrix
    takes about 0.2 s on one thread; the last window's refit makes three of them). An
    eigendecomposition of ``b`` is the fallback where the Cholesky factorisation fails.
    """
    try:
        lower = np.linalg.cholesky(b)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(b)
        values = np.clip(values, 1e-300, None)
        root = (vectors * np.sqrt(values)) @ vectors.T
        inverse_root = (vectors / np.sqrt(values)) @ vectors.T
        inner_values, inner_vectors = np.linalg.eigh(root @ a @ root)
        inner = (inner_vectors * np.sqrt(np.clip(inner_values, 0.0, None))) @ inner_vectors.T
        return inverse_root @ inner @ inverse_root
    inner_values, inner_vectors = np.linalg.eigh(lower.T @ a @ lower)
    inner = (inner_vectors * np.sqrt(np.clip(inner_values, 0.0, None))) @ inner_vectors.T
    left = linalg.solve_triangular(lower, inner, lower=True, trans="T")  # L⁻ᵀ S
    mean = linalg.solve_triangular(lower, left.T, lower=True, trans="T").T  # (L⁻ᵀ (L⁻ᵀ S)ᵀ)ᵀ
    return 0.5 * (mean + mean.T)


def noise_cutoff(n_draws: int, dim: int) -> float:
    """The largest eigenvalue that sampling noise alone gives a covariance estimated from
    ``n_draws`` draws of a ``dim``-dimensional standard normal: the Marchenko–Pastur edge
    ``(1 + √(m / n))²``, with ``m = min(dim, 2 n)`` the dimension the draws and gradients span.

    A correction estimated where the posterior is already whitened is applied only beyond it:
    at the cutoff of 2 alone, 25-draw windows in 200-D turned an exact metric (whitened
    eigenvalues within 2 %) into one 19 times off.
    """
    span = min(dim, 2 * n_draws)
    return (1.0 + np.sqrt(span / max(n_draws, 1))) ** 2


def estimate_metric(
    draws: np.ndarray,
    grads: np.ndarray,
    max_rank: int,
    cutoff: float = EIGENVALUE_CUTOFF,
    regularization: float = REGULARIZATION,
    span_draws: int | None = None,
) -> Metric:
    """A metric from draws and the log density's gradients at them (nutpie's estimator).

    Parameters
    ----------
    draws, grads : numpy.ndarray
        ``(n, d)`` points and the gradients of the log density there; ``n ≥ 2``.
    max_rank : int
        Directions corrected at most (0: diagonal only; ``d``: as dense as the data allow).
    cutoff : float
        Eigenvalues of the whitened estimate within ``[1/cutoff, cutoff]`` are left at 1.
    regularization : float
        Added to the projected covariances of draws and gradients.
    span_draws : int, optional
        At most this many of the draws (evenly spaced) enter the low-rank part, whose cost is
        cubic in the dimension their span has (``min(2n, d)``); the diagonal uses all of them.

    Notes
    -----
    Exact for a Gaussian in the limit of many draws: ``Cov(x) = Σ`` and ``Cov(∇ log p) = Σ⁻¹``,
    so both terms agree and their geometric mean is ``Σ``. With few draws it is a shrinkage
    estimate: directions outside the span of the draws and gradients keep the diagonal.
    """
    n, dim = draws.shape
    centered = draws - draws.mean(axis=0)
    centered_grads = grads - grads.mean(axis=0)
    var_x = np.mean(centered**2, axis=0)
    var_g = np.mean(centered_grads**2, axis=0)
    fallback = np.ones(dim)
    ok = (var_x > 0) & (var_g > 0) & np.isfinite(var_x) & np.isfinite(var_g)
    scale = np.where(ok, (np.where(ok, var_x, 1.0) / np.where(ok, var_g, 1.0)) ** 0.25, fallback)
    if max_rank == 0:
        return Metric(scale, np.zeros((dim, 0)), np.zeros(0))
    x = centered / scale
    g = centered_grads * scale
    if span_draws is not None and n > span_draws:
        rows = np.round(np.linspace(0, n - 1, max(span_draws, 2))).astype(int)
        x, g, n = x[rows], g[rows], len(rows)
    if 2 * n >= dim:
        # The draws and gradients span the whole space: its own axes serve as the basis (a QR
        # of the wide (d, 2n) matrix cost 0.1-1 s at d = 205 with 2n = 1000-2000 in NumPy).
        q = None
        x_proj, g_proj = x, g
    else:
        q, _ = np.linalg.qr(np.concatenate([x, g]).T)  # (d, 2n) orthonormal columns
        x_proj = x @ q
        g_proj = g @ q
    m = x_proj.shape[1]
    cov_x = x_proj.T @ x_proj / n + regularization * np.eye(m)
    cov_g = g_proj.T @ g_proj / n + regularization * np.eye(m)
    mean = _spd_mean(cov_x, cov_g)
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (mean + mean.T))
    vectors, coef = _select(eigenvalues, eigenvectors, max_rank, cutoff)
    basis = vectors if q is None else q @ vectors
    return Metric(scale, np.ascontiguousarray(basis), coef)


def whitened_variances(metric: Metric, draws: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """The variance along each corrected direction of ``metric``, in the coordinates it
    whitens, as ``draws`` and the log density's gradients ``grads`` there show it.

    ``√(Var(u·b) / Var(g_u·b))`` for each direction ``b`` (``u`` the whitened draws, ``g_u``
    their gradients): 1 where the metric is right. For a Gaussian the estimate is exact along
    the covariance's eigen-directions whatever the draws (``g_u = −A u`` with ``A`` the whitened
    precision), so a metric built from the exact curvature gives exactly 1 from a handful of
    draws; a posterior whose curvature at the mode misstates its spread (a hierarchy's funnel,
    latent volatilities) gives values far from 1.

    Parameters
    ----------
    metric : Metric
        The metric whose ``rank`` directions are checked.
    draws, grads : numpy.ndarray
        ``(n, d)`` points and the gradients of the log density there, ``n >= 2``.

    Returns
    -------
    numpy.ndarray
        ``(rank,)`` variances (``nan`` where the gradients do not vary along a direction).
    """
    stretch = 1.0 + metric.coef
    along = ((draws - draws.mean(axis=0)) / metric.scale) @ metric.basis / stretch
    along_grads = ((grads - grads.mean(axis=0)) * metric.scale) @ metric.basis * stretch
    var_x, var_g = along.var(axis=0), along_grads.var(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var_g > 0, np.sqrt(var_x / np.where(var_g > 0, var_g, 1.0)), np.nan)
