"""Metropolis-adjusted Hamiltonian trajectories: the within-mode kernel that scales with d.

Underdamped Langevin dynamics with full momentum refresh at every draw, discretised by
leapfrog steps and corrected by one Metropolis test per trajectory, is Hamiltonian Monte Carlo.
A trajectory of ``L`` leapfrog steps moves about ``L`` step lengths (ballistically), where ``L``
MALA steps move about ``√L`` (a diffusion), and its best step size shrinks as ``d^(-1/4)``
rather than MALA's ``d^(-1/3)``: that is why it replaces MALA as the chain's kernel in high
dimension (see :mod:`pymc_dilation.engine.kernels` for MALA, still available).

The trajectory runs in the whitened coordinates ``u`` of a :class:`~pymc_dilation.engine.metric.
Metric` (``x = R u``) with an identity mass matrix, which is HMC with the inverse mass matrix
``R Rᵀ``; every leapfrog step maps its position to ``x`` and the gradient back in ``O(d k)``.
The whole trajectory is one compiled call. The number of steps is jittered by the caller
(:class:`~pymc_dilation.engine.adaptation.UTurnLengths`), which keeps the chain from locking
onto a period of the dynamics; any number of steps drawn independently of the state leaves the
posterior invariant, so the kernel is exact. While tuning, a trajectory can be continued past
its proposal to measure its first U-turn (``extend_to``): the continuation changes no draw.

A trajectory whose log density or gradient becomes non-finite, or whose energy error exceeds
:data:`~pymc_dilation.engine.kernels.DIVERGENCE_THRESHOLD`, is rejected and reported divergent
(PyMC's NUTS uses the same threshold).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import types

from pymc_dilation.engine.kernels import DIVERGENCE_THRESHOLD, PointFunction
from pymc_dilation.engine.metric import Metric

__all__ = ["TrajectoryInfo", "hmc_trajectory"]


class TrajectoryInfo(NamedTuple):
    """What one trajectory reports.

    Attributes
    ----------
    acceptance_rate : float
        Metropolis acceptance probability of the trajectory's end point.
    diverging : bool
        Whether the trajectory diverged (and was rejected).
    energy_error : float
        Change of the Hamiltonian along the trajectory (``inf`` when it diverged).
    n_grad : int
        Gradient evaluations spent (the leapfrog steps taken, the continuation to the U-turn
        included).
    uturn : int
        The first leapfrog step after which the trajectory turned back towards its start
        (``(u_t - u_0) . p_t < 0``, whitened coordinates), or -1 when none came within the
        steps taken.
    start_u, end_u, end_momentum : numpy.ndarray
        The start and the proposal's position and momentum in whitened coordinates (for
        trajectory-length adaptation), whether or not it was accepted.
    state_u, state_grad_u : numpy.ndarray
        The returned state's position and gradient in whitened coordinates (the proposal's
        when accepted, the start's otherwise), to start the next trajectory from while the
        metric stays the same.
    """

    acceptance_rate: float
    diverging: bool
    energy_error: float
    n_grad: int
    uturn: int
    start_u: np.ndarray
    end_u: np.ndarray
    end_momentum: np.ndarray
    state_u: np.ndarray
    state_grad_u: np.ndarray


@numba.njit(cache=True)
def _mix(v, basis_rows, coef, out):
    """``out = (I + Bᵀ diag(coef) B) v`` with ``B = basis_rows`` of shape ``(k, d)`` (two
    BLAS matrix-vector products)."""
    out[:] = v
    if basis_rows.shape[0] > 0:
        projection = np.dot(basis_rows, v) * coef
        out += np.dot(projection, basis_rows)


@numba.njit(cache=True)
def _evaluate(logp_fn, extra, u, scale, basis_rows, coef, x, grad_x, grad_u, scratch):
    """``logp_fn`` at ``x = R u``; its gradient in ``u`` (``Rᵀ ∇``) written to ``grad_u``."""
    dim = u.shape[0]
    _mix(u, basis_rows, coef, x)
    for i in range(dim):
        x[i] *= scale[i]
    lp = logp_fn(x, extra, grad_x)
    for i in range(dim):
        scratch[i] = scale[i] * grad_x[i]
    _mix(scratch, basis_rows, coef, grad_u)
    return lp


_F8 = types.float64
_VECTOR = _F8[::1]
_TRAJECTORY_SIGNATURE = types.Tuple(
    (_F8, _F8, types.boolean, types.boolean, _F8, types.int64, types.int64, _VECTOR, _VECTOR,
     _VECTOR, _VECTOR, _VECTOR)
)(
    PointFunction, _VECTOR, _VECTOR, _VECTOR, _F8, _F8, types.int64, types.int64, _VECTOR,
    _F8, _VECTOR, _F8[:, ::1], _VECTOR,
)  # fmt: skip
"""An explicit signature, with the log density as a first-class function type: the kernel is
compiled (and cached on disk) once, not again for each model and process (without it, every
new process spent 2.5-3.5 s compiling the first trajectory)."""


@numba.njit(_TRAJECTORY_SIGNATURE, cache=True)
def _trajectory(
    logp_fn, extra, u, grad_u, lp, eps, n_steps, extend_to, momentum, log_uniform, scale,
    basis_rows, coef,
):  # fmt: skip
    """One leapfrog trajectory of ``n_steps`` steps from ``(u, momentum)``, watched for its
    first U-turn and, when that has not come by ``n_steps``, continued to it or to
    ``extend_to`` steps (the continuation only measures; the proposal is the ``n_steps``-th
    point). Returns ``(lp_end, accept_prob, accepted, diverging, energy_error, n_grad,
    uturn, end_u, end_momentum, end_x, end_grad_x, end_grad_u)``, the ``end_x`` and
    ``end_grad_x`` in density coordinates; ``uturn`` is the first step after which
    ``(u_t - u_0) . p_t < 0``, or -1 when none came."""
    dim = u.shape[0]
    q = u.copy()
    p = momentum.copy()
    g = grad_u.copy()
    x = np.empty(dim)
    grad_x = np.empty(dim)
    scratch = np.empty(dim)
    kinetic0 = 0.0
    for i in range(dim):
        kinetic0 += 0.5 * p[i] * p[i]
    lp_new = lp
    diverging = False
    taken = 0
    uturn = -1
    last = max(n_steps, extend_to)
    # The proposal is the current state unless the trajectory runs on past it to measure its
    # U-turn; only then is it copied aside.
    end = (lp, q, p, x, grad_x, g)
    saved = False
    while taken < last:
        for i in range(dim):
            p[i] += 0.5 * eps * g[i]
            q[i] += eps * p[i]
        lp_new = _evaluate(logp_fn, extra, q, scale, basis_rows, coef, x, grad_x, g, scratch)
        taken += 1
        finite = np.isfinite(lp_new)
        for i in range(dim):
            finite = finite and np.isfinite(g[i])
        if not finite:
            if taken <= n_steps:
                diverging = True
            elif uturn < 0:
                uturn = taken  # the continuation failed: the longest length it measured
            break
        turn = 0.0
        for i in range(dim):
            p[i] += 0.5 * eps * g[i]
            turn += (q[i] - u[i]) * p[i]
        if uturn < 0 and turn < 0.0:
            uturn = taken
        if taken == n_steps and last > n_steps:
            end = (lp_new, q.copy(), p.copy(), x.copy(), grad_x.copy(), g.copy())
            saved = True
        if taken >= n_steps and uturn >= 0:
            break
    if saved:
        lp_new, q, p, x, grad_x, g = end
    energy_error = np.inf
    if not diverging:
        kinetic1 = 0.0
        for i in range(dim):
            kinetic1 += 0.5 * p[i] * p[i]
        energy_error = (kinetic1 - lp_new) - (kinetic0 - lp)
        if not np.isfinite(energy_error) or energy_error > DIVERGENCE_THRESHOLD:
            diverging = True
            energy_error = np.inf
    accept = 0.0 if diverging else min(1.0, np.exp(-energy_error))
    accepted = (not diverging) and log_uniform < -energy_error
    return lp_new, accept, accepted, diverging, energy_error, taken, uturn, q, p, x, grad_x, g


def hmc_trajectory(
    logp_fn,
    extra: np.ndarray,
    metric: Metric,
    x: np.ndarray,
    lp: float,
    grad: np.ndarray,
    step_size: float,
    n_steps: int,
    rng: np.random.Generator,
    whitened: tuple[np.ndarray, np.ndarray] | None = None,
    extend_to: int = 0,
) -> tuple[np.ndarray, float, np.ndarray, TrajectoryInfo]:
    """One Metropolis-adjusted trajectory of ``n_steps`` leapfrog steps from ``x``.

    Parameters
    ----------
    logp_fn : compiled function
        ``logp = logp_fn(x, extra, grad_out)`` (see
        :func:`~pymc_dilation.engine.kernels.point_function`).
    extra : numpy.ndarray
        Second argument of ``logp_fn``.
    metric : Metric
        The preconditioner: the trajectory moves in ``u = R⁻¹ x`` with unit mass.
    x, lp, grad : numpy.ndarray, float, numpy.ndarray
        The current point, its log density and gradient (density coordinates).
    step_size : float
        Leapfrog step in whitened units.
    n_steps : int
        Leapfrog steps (gradient evaluations) of the trajectory, at least 1.
    rng : numpy.random.Generator
        Source of the momentum and of the Metropolis uniform.
    whitened : tuple of numpy.ndarray, optional
        ``(u, grad_u)`` of ``x`` in this metric's coordinates, when known (the previous
        trajectory's ``info.state_u`` and ``info.state_grad_u``): at d = 1000 each of the two
        products it saves reads a dense ``(d, k)`` basis twice.
    extend_to : int
        When the trajectory has not turned back by ``n_steps``, continue it up to this many
        steps to measure where it does (``info.uturn``); the proposal stays the
        ``n_steps``-th point, so the continuation costs gradients and changes no draw.

    Returns
    -------
    x, lp, grad, info
        The chain's next state (density coordinates) and a :class:`TrajectoryInfo`.
    """
    if whitened is None:
        u, grad_u = metric.to_whitened(x), metric.gradient_to_whitened(grad)
    else:
        u, grad_u = whitened
    momentum = rng.standard_normal(metric.dim)
    log_uniform = float(np.log(rng.uniform()))
    (
        lp_new,
        accept,
        accepted,
        diverging,
        energy_error,
        taken,
        uturn,
        end_u,
        end_p,
        end_x,
        end_grad_x,
        end_grad_u,
    ) = _trajectory(
        logp_fn,
        extra,
        u,
        grad_u,
        float(lp),
        float(step_size),
        int(n_steps),
        int(extend_to),
        momentum,
        log_uniform,
        metric.scale,
        metric.basis_rows,
        metric.coef,
    )  # fmt: skip
    info = TrajectoryInfo(
        float(accept),
        bool(diverging),
        float(energy_error),
        int(taken),
        int(uturn),
        u,
        end_u,
        end_p,
        end_u if accepted else u,
        end_grad_u if accepted else grad_u,
    )
    if not accepted:
        return x, float(lp), grad, info
    return end_x, float(lp_new), end_grad_x, info
