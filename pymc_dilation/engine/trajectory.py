"""Metropolis-adjusted Hamiltonian trajectories: the within-mode kernel that scales with d.

Underdamped Langevin dynamics with full momentum refresh at every draw, discretised by
leapfrog steps and corrected by one Metropolis test per trajectory, is Hamiltonian Monte Carlo.
A trajectory of ``L`` leapfrog steps moves about ``L`` step lengths (ballistically), where ``L``
MALA steps move about ``√L`` (a diffusion), and its best step size shrinks as ``d^(-1/4)``
rather than MALA's ``d^(-1/3)``: that is why it replaces MALA as the chain's kernel in high
dimension (see :mod:`pymc_dilation.engine.kernels` for MALA, still available).

The trajectory is HMC in the whitened coordinates ``u`` of a :class:`~pymc_dilation.engine.
metric.Metric` (``x = R u``) with an identity mass matrix, run in the density's coordinates:
there it is HMC with the inverse mass matrix ``R Rᵀ = D (I + B diag((1 + c)² − 1) Bᵀ) D``, and
each leapfrog step applies that matrix once to the momentum (``O(d k)``), where moving in ``u``
mapped the position to ``x`` and the gradient back (twice: at 1005 parameters and rank 88 the
two products cost more than the model's gradient). The two are the same dynamics, step for step
(``x_t = R u_t``, ``p_x = R⁻ᵀ p_u``, and the U-turn criterion ``(u_t − u_0) · p_u`` equals
``(x_t − x_0) · p_x``). The whole trajectory is one compiled call. The number of steps is
jittered by the caller (:class:`~pymc_dilation.engine.adaptation.UTurnLengths`), which keeps
the chain from locking onto a period of the dynamics; any number of steps drawn independently
of the state leaves the posterior invariant, so the kernel is exact. While tuning, a trajectory
can be continued past its proposal to measure its first U-turn (``extend_to``): the
continuation changes no draw.

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
    end_x, end_momentum : numpy.ndarray
        The proposal's position (density coordinates) and momentum (whitened coordinates),
        for trajectory-length adaptation, whether or not it was accepted.
    """

    acceptance_rate: float
    diverging: bool
    energy_error: float
    n_grad: int
    uturn: int
    end_x: np.ndarray
    end_momentum: np.ndarray


@numba.njit(cache=True)
def _mix(v, basis_rows, coef, out):
    """``out = (I + Bᵀ diag(coef) B) v`` with ``B = basis_rows`` of shape ``(k, d)`` (two
    BLAS matrix-vector products)."""
    out[:] = v
    if basis_rows.shape[0] > 0:
        projection = np.dot(basis_rows, v) * coef
        out += np.dot(projection, basis_rows)


_F8 = types.float64
_VECTOR = _F8[::1]
_TRAJECTORY_SIGNATURE = types.Tuple(
    (_F8, _F8, types.boolean, types.boolean, _F8, types.int64, types.int64, _VECTOR, _VECTOR,
     _VECTOR)
)(
    PointFunction, _VECTOR, _VECTOR, _VECTOR, _F8, _F8, types.int64, types.int64, _VECTOR,
    _F8, _VECTOR, _F8[:, ::1], _VECTOR, _VECTOR, _VECTOR,
)  # fmt: skip
"""An explicit signature, with the log density as a first-class function type: the kernel is
compiled (and cached on disk) once, not again for each model and process (without it, every
new process spent 2.5-3.5 s compiling the first trajectory)."""


@numba.njit(_TRAJECTORY_SIGNATURE, cache=True)
def _trajectory(
    logp_fn, extra, x0, grad0, lp, eps, n_steps, extend_to, momentum_u, log_uniform, scale,
    basis_rows, coef, coef_inverse, coef_squared,
):  # fmt: skip
    """One leapfrog trajectory of ``n_steps`` steps from ``(x0, R⁻ᵀ momentum_u)`` with the
    inverse mass matrix ``R Rᵀ``, watched for its first U-turn and, when that has not come by
    ``n_steps``, continued to it or to ``extend_to`` steps (the continuation only measures;
    the proposal is the ``n_steps``-th point). ``coef``, ``coef_inverse`` and
    ``coef_squared`` are the basis coefficients of ``R``, ``R⁻¹`` and ``R Rᵀ`` (see
    :class:`~pymc_dilation.engine.metric.Metric`). Returns ``(lp_end, accept_prob, accepted,
    diverging, energy_error, n_grad, uturn, end_x, end_grad_x, end_momentum_u)``; ``uturn``
    is the first step after which ``(x_t - x_0) . p_t < 0``, or -1 when none came."""
    dim = x0.shape[0]
    x = x0.copy()
    g = grad0.copy()
    p = np.empty(dim)
    velocity = np.empty(dim)
    scratch = np.empty(dim)
    _mix(momentum_u, basis_rows, coef_inverse, p)
    kinetic0 = 0.0
    for i in range(dim):
        p[i] /= scale[i]
        kinetic0 += 0.5 * momentum_u[i] * momentum_u[i]
    lp_new = lp
    diverging = False
    taken = 0
    uturn = -1
    last = max(n_steps, extend_to)
    # The proposal is the current state unless the trajectory runs on past it to measure its
    # U-turn; only then is it copied aside.
    end = (lp, x, p, g)
    saved = False
    while taken < last:
        for i in range(dim):
            p[i] += 0.5 * eps * g[i]
            scratch[i] = scale[i] * p[i]
        _mix(scratch, basis_rows, coef_squared, velocity)
        for i in range(dim):
            x[i] += eps * scale[i] * velocity[i]
        lp_new = logp_fn(x, extra, g)
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
            turn += (x[i] - x0[i]) * p[i]
        if uturn < 0 and turn < 0.0:
            uturn = taken
        if taken == n_steps and last > n_steps:
            end = (lp_new, x.copy(), p.copy(), g.copy())
            saved = True
        if taken >= n_steps and uturn >= 0:
            break
    if saved:
        lp_new, x, p, g = end
    momentum_end = np.zeros(dim)
    energy_error = np.inf
    if not diverging:
        for i in range(dim):
            scratch[i] = scale[i] * p[i]
        _mix(scratch, basis_rows, coef, momentum_end)  # Rᵀ p: the momentum in u
        kinetic1 = 0.0
        for i in range(dim):
            kinetic1 += 0.5 * momentum_end[i] * momentum_end[i]
        energy_error = (kinetic1 - lp_new) - (kinetic0 - lp)
        if not np.isfinite(energy_error) or energy_error > DIVERGENCE_THRESHOLD:
            diverging = True
            energy_error = np.inf
    accept = 0.0 if diverging else min(1.0, np.exp(-energy_error))
    accepted = (not diverging) and log_uniform < -energy_error
    return lp_new, accept, accepted, diverging, energy_error, taken, uturn, x, g, momentum_end


def _trajectory_numpy(
    logp_grad, x0, grad0, lp, eps, n_steps, extend_to, momentum_u, log_uniform, metric
):  # fmt: skip
    """:func:`_trajectory` for a log density that is no compiled point function (the C
    backend's, where Numba cannot compile the model): the same dynamics, U-turn and
    divergence rules, one Python iteration per leapfrog step with array operations, and
    ``logp_grad(x) -> (lp, grad)``."""
    scale, mix = metric.scale, metric._mix  # (I + B diag(coef) Bᵀ) v
    x, g = x0.copy(), grad0.copy()
    p = mix(momentum_u, metric.inverse_coef) / scale
    kinetic0 = 0.5 * float(momentum_u @ momentum_u)
    lp_new, diverging, taken, uturn = lp, False, 0, -1
    last = max(n_steps, extend_to)
    end = None
    while taken < last:
        p = p + 0.5 * eps * g
        x = x + eps * scale * mix(scale * p, metric.covariance_coef)
        with np.errstate(all="ignore"):
            lp_new, g = logp_grad(x)
        lp_new, g = float(lp_new), np.asarray(g, dtype=float)
        taken += 1
        if not (np.isfinite(lp_new) and np.all(np.isfinite(g))):
            if taken <= n_steps:
                diverging = True
            elif uturn < 0:
                uturn = taken
            break
        p = p + 0.5 * eps * g
        if uturn < 0 and float((x - x0) @ p) < 0.0:
            uturn = taken
        if taken == n_steps and last > n_steps:
            end = (lp_new, x, p, g)
        if taken >= n_steps and uturn >= 0:
            break
    if end is not None:
        lp_new, x, p, g = end
    momentum_end = np.zeros(len(x0))
    energy_error = np.inf
    if not diverging:
        momentum_end = mix(scale * p, metric.coef)
        energy_error = (0.5 * float(momentum_end @ momentum_end) - lp_new) - (kinetic0 - lp)
        if not np.isfinite(energy_error) or energy_error > DIVERGENCE_THRESHOLD:
            diverging, energy_error = True, np.inf
    accept = 0.0 if diverging else min(1.0, float(np.exp(-energy_error)))
    accepted = (not diverging) and log_uniform < -energy_error
    return lp_new, accept, accepted, diverging, energy_error, taken, uturn, x, g, momentum_end


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
    extend_to: int = 0,
    logp_grad=None,
) -> tuple[np.ndarray, float, np.ndarray, TrajectoryInfo]:
    """One Metropolis-adjusted trajectory of ``n_steps`` leapfrog steps from ``x``.

    Parameters
    ----------
    logp_fn : compiled function or None
        ``logp = logp_fn(x, extra, grad_out)`` (see
        :func:`~pymc_dilation.engine.kernels.point_function`); None where the model has no
        compiled point function (the C backend), and then ``logp_grad`` is used.
    extra : numpy.ndarray
        Second argument of ``logp_fn``.
    metric : Metric
        The preconditioner: the dynamics are those of ``u = R⁻¹ x`` with unit mass.
    x, lp, grad : numpy.ndarray, float, numpy.ndarray
        The current point, its log density and gradient (density coordinates).
    step_size : float
        Leapfrog step in whitened units.
    n_steps : int
        Leapfrog steps (gradient evaluations) of the trajectory, at least 1.
    rng : numpy.random.Generator
        Source of the momentum and of the Metropolis uniform.
    extend_to : int
        When the trajectory has not turned back by ``n_steps``, continue it up to this many
        steps to measure where it does (``info.uturn``); the proposal stays the
        ``n_steps``-th point, so the continuation costs gradients and changes no draw.

    logp_grad : callable, optional
        ``logp_grad(x) -> (lp, grad)``, the log density where ``logp_fn`` is None.

    Returns
    -------
    x, lp, grad, info
        The chain's next state (density coordinates) and a :class:`TrajectoryInfo`.
    """
    momentum = rng.standard_normal(metric.dim)
    log_uniform = float(np.log(rng.uniform()))
    x0 = np.ascontiguousarray(x, dtype=float)
    grad0 = np.ascontiguousarray(grad, dtype=float)
    if logp_fn is None:
        if logp_grad is None:
            raise ValueError("hmc_trajectory needs logp_fn or logp_grad; both are None.")
        result = _trajectory_numpy(
            logp_grad, x0, grad0, float(lp), float(step_size), int(n_steps), int(extend_to),
            momentum, log_uniform, metric,
        )  # fmt: skip
    else:
        result = _trajectory(
            logp_fn, extra, x0, grad0, float(lp), float(step_size), int(n_steps),
            int(extend_to), momentum, log_uniform, metric.scale, metric.basis_rows,
            metric.coef, metric.inverse_coef, metric.covariance_coef,
        )  # fmt: skip
    lp_new, accept, accepted, diverging, energy_error, taken, uturn, end_x, end_grad, end_p = result
    info = TrajectoryInfo(
        float(accept), bool(diverging), float(energy_error), int(taken), int(uturn), end_x, end_p
    )
    if not accepted:
        return x, float(lp), grad, info
    return end_x, float(lp_new), end_grad, info
