"""Langevin proposals, their Metropolis correction, and multi-step drivers.

The primitives broadcast over leading axes, so one definition serves a single point ``(d,)`` and
a population ``(n, d)``. Two drivers run ``n_steps`` Langevin steps:

- :func:`langevin_steps_compiled` takes a Numba-compiled point log density (wrapped by
  :func:`point_function`) and runs every step of every particle in one compiled
  call (the fast path for PyMC models);
- :func:`langevin_steps_vectorized` takes any batched callable
  ``logp_grad(Y) -> (logp (n,), grad (n, d))`` and runs a Python loop over *steps* only, each step
  evaluating all particles in one call (the path for user log densities).

Given the same noise, both drivers return the same states (a test checks it). The state is in
target coordinates: on the dilation path, a step on ``p_lam`` with step ``eps * lam`` is a step on
the target with step ``eps`` (see :mod:`pymc_dilation.engine.path`).

A proposal whose log density or gradient is not finite, or whose log acceptance ratio is below
``-DIVERGENCE_THRESHOLD`` (PyMC's NUTS uses the same 1000 for energy errors), is rejected and
counted as a divergence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np
from numba import types

__all__ = [
    "DIVERGENCE_THRESHOLD",
    "LangevinInfo",
    "proposal_mean",
    "log_proposal_density",
    "mala_log_accept_ratio",
    "langevin_steps_compiled",
    "langevin_steps_vectorized",
    "hmc_steps_vectorized",
    "point_function",
    "PointFunction",
]

DIVERGENCE_THRESHOLD = 1000.0


class LangevinInfo(NamedTuple):
    """What a run of Langevin steps reports, per particle.

    Attributes
    ----------
    acceptance_rate : numpy.ndarray
        Mean Metropolis acceptance probability of the proposals, shape ``(n,)``. Reported for
        unadjusted steps too, where it measures how far the step size is from exactness.
    divergences : numpy.ndarray
        Number of divergent proposals, shape ``(n,)``.
    n_grad : int
        Gradient evaluations per particle.
    """

    acceptance_rate: np.ndarray
    divergences: np.ndarray
    n_grad: int


@numba.njit(cache=True)
def proposal_mean(y, grad, eps, inv_mass):
    """Mean of the preconditioned Langevin proposal: ``y + eps * M * grad``."""
    return y + eps * inv_mass * grad


@numba.njit(cache=True)
def log_proposal_density(y_to, mean_from, eps, inv_mass):
    """Log density (up to a constant shared by both directions) of ``N(mean_from, 2 eps M)``."""
    diff = y_to - mean_from
    return -np.sum(diff * diff / inv_mass, axis=-1) / (4.0 * eps)


@numba.njit(cache=True)
def mala_log_accept_ratio(y, lp, grad, y_prop, lp_prop, grad_prop, eps, inv_mass):
    """Log Metropolis–Hastings ratio of a Langevin proposal ``y -> y_prop``."""
    forward = log_proposal_density(y_prop, proposal_mean(y, grad, eps, inv_mass), eps, inv_mass)
    backward = log_proposal_density(
        y, proposal_mean(y_prop, grad_prop, eps, inv_mass), eps, inv_mass
    )
    return lp_prop - lp + backward - forward


POINT_SIGNATURE = types.float64(types.float64[::1], types.float64[::1], types.float64[::1])
PointFunction = types.FunctionType(POINT_SIGNATURE)


def point_function(logp_fn):
    """Wrap a Numba ``logp_fn(y, extra) -> (logp, grad)`` as a first-class compiled function.

    The wrapper has one fixed signature, ``logp = f(y, extra, grad_out)``, writing the gradient
    into ``grad_out``. Kernels take it as a typed function pointer, so they are compiled (and
    cached on disk) once, not again for every model.
    """

    @numba.njit(POINT_SIGNATURE)
    def wrapped(y, extra, grad_out):
        lp, grad = logp_fn(y, extra)
        grad_out[:] = grad
        return np.asarray(lp).ravel()[0]

    return wrapped


@numba.njit(cache=True)
def _evaluate(logp_fn, extra, z, shift, root, x, grad_x, grad_out):
    """``logp_fn`` at ``shift + root @ z``, its gradient in ``z`` written to ``grad_out``.

    An empty ``root`` means no map: ``logp_fn`` is evaluated at ``z`` itself. ``x`` and
    ``grad_x`` are scratch vectors.
    """
    if root.shape[0] == 0:
        return logp_fn(z, extra, grad_out)
    dim = z.shape[0]
    for i in range(dim):
        acc = shift[i]
        for j in range(dim):
            acc += root[i, j] * z[j]
        x[i] = acc
    lp = logp_fn(x, extra, grad_x)
    for j in range(dim):
        acc = 0.0
        for i in range(dim):
            acc += root[i, j] * grad_x[i]
        grad_out[j] = acc
    return lp


@numba.njit(cache=True)
def _chain_steps(
    logp_fn, extra, y, grad, lp, eps, inv_mass, scale, noise, log_u, metropolis, shift, root
):
    """``noise.shape[0]`` Langevin steps of one particle; ``y`` and ``grad`` updated in place.

    Written with explicit loops and scratch vectors: this runs for every particle and step,
    and temporaries would cost more than the arithmetic. ``y`` lives in the engine's
    coordinates, mapped to the density's by ``shift + root @ y`` (see :func:`_evaluate`).
    Returns the new log density, the summed acceptance probability and the number of
    divergences.
    """
    dim = y.shape[0]
    y_prop = np.empty(dim)
    grad_prop = np.empty(dim)
    x = np.empty(dim)
    grad_x = np.empty(dim)
    accept_sum = 0.0
    n_div = 0
    for s in range(noise.shape[0]):
        for j in range(dim):
            y_prop[j] = y[j] + eps * inv_mass[j] * grad[j] + scale[j] * noise[s, j]
        lp_prop = _evaluate(logp_fn, extra, y_prop, shift, root, x, grad_x, grad_prop)
        finite = np.isfinite(lp_prop)
        forward = 0.0
        backward = 0.0
        for j in range(dim):
            finite = finite and np.isfinite(grad_prop[j])
            a = y_prop[j] - y[j] - eps * inv_mass[j] * grad[j]
            b = y[j] - y_prop[j] - eps * inv_mass[j] * grad_prop[j]
            forward += a * a / inv_mass[j]
            backward += b * b / inv_mass[j]
        if not finite:
            n_div += 1
            continue
        log_r = lp_prop - lp + (forward - backward) / (4.0 * eps)
        if log_r < -DIVERGENCE_THRESHOLD:
            n_div += 1
        accept_sum += 1.0 if log_r >= 0.0 else np.exp(log_r)
        if (not metropolis) or log_u[s] < log_r:
            lp = lp_prop
            for j in range(dim):
                y[j] = y_prop[j]
                grad[j] = grad_prop[j]
    return lp, accept_sum, n_div


_F8 = types.float64
_POPULATION_SIGNATURE = types.Tuple((_F8[::1], types.int64[::1]))(
    PointFunction, _F8[::1], _F8[:, ::1], _F8[::1], _F8[:, ::1], _F8[::1], _F8[::1],
    _F8[:, :, ::1], _F8[:, ::1], types.boolean, _F8[::1], _F8[:, ::1],
)  # fmt: skip


def _population_steps_py(
    logp_fn, extra, ys, lps, grads, eps, inv_mass, noise, log_u, metropolis, shift, root
):
    n = ys.shape[0]
    n_steps = noise.shape[1]
    acceptance = np.empty(n)
    divergences = np.empty(n, dtype=np.int64)
    for i in numba.prange(n):
        scale = np.sqrt(2.0 * eps[i] * inv_mass)
        lp, accept_sum, n_div = _chain_steps(
            logp_fn, extra, ys[i], grads[i], lps[i], eps[i], inv_mass, scale, noise[i], log_u[i],
            metropolis, shift, root,
        )  # fmt: skip
        lps[i] = lp
        acceptance[i] = accept_sum / n_steps
        divergences[i] = n_div
    return acceptance, divergences


_population_steps = numba.njit(_POPULATION_SIGNATURE, cache=True)(_population_steps_py)
_population_steps_parallel = numba.njit(_POPULATION_SIGNATURE, cache=True, parallel=True)(
    _population_steps_py
)
PARALLEL_MIN_PARTICLES = 64
"""Populations at least this large are stepped by all cores (Numba threads over particles)."""


def _draw_noise(rng: np.random.Generator, n: int, n_steps: int, dim: int):
    return rng.standard_normal((n, n_steps, dim)), np.log(rng.uniform(size=(n, n_steps)))


def _step_sizes(eps, n: int) -> np.ndarray:
    """One step size per particle: a scalar is shared, an array gives each particle its own."""
    return np.array(np.broadcast_to(np.asarray(eps, dtype=float), (n,)), order="C")


def langevin_steps_compiled(
    logp_fn,
    extra: np.ndarray,
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    eps: float | np.ndarray,
    inv_mass: np.ndarray,
    n_steps: int,
    rng: np.random.Generator,
    metropolis: bool = True,
    shift: np.ndarray | None = None,
    root: np.ndarray | None = None,
) -> LangevinInfo:
    """Run ``n_steps`` Langevin steps on every particle in one compiled call, in place.

    Parameters
    ----------
    logp_fn : compiled function
        ``logp = logp_fn(y, extra, grad_out)`` for one point ``y`` of shape ``(d,)``, as made by
        :func:`point_function`.
    extra : numpy.ndarray
        Second argument of ``logp_fn`` (values the density depends on but does not sample).
    ys, lps, grads : numpy.ndarray
        States ``(n, d)``, their log densities ``(n,)`` and gradients ``(n, d)``; updated in place.
    eps : float or numpy.ndarray
        Step size in target coordinates, shared or one per particle ``(n,)``.
    inv_mass : numpy.ndarray
        Diagonal preconditioner ``M`` (inverse mass), shape ``(d,)``.
    n_steps : int
        Steps per particle.
    rng : numpy.random.Generator
        Source of the proposal noise and of the Metropolis uniforms.
    metropolis : bool
        Accept/reject each proposal (MALA) or always move (ULA).
    shift, root : numpy.ndarray, optional
        An affine map ``x = shift + root @ y`` from the particles' coordinates ``y`` to the
        argument of ``logp_fn`` (a dense preconditioner, see
        :mod:`pymc_dilation.engine.laplace`); ``lps`` and ``grads`` are then the log density and
        gradient in ``y``. Default: no map.

    Returns
    -------
    LangevinInfo
    """
    dim = ys.shape[1]
    shift = np.zeros(0) if shift is None else np.ascontiguousarray(shift, dtype=float)
    root = np.zeros((0, dim)) if root is None else np.ascontiguousarray(root, dtype=float)
    noise, log_u = _draw_noise(rng, ys.shape[0], n_steps, ys.shape[1])
    kernel = (
        _population_steps_parallel if ys.shape[0] >= PARALLEL_MIN_PARTICLES else _population_steps
    )
    acceptance, divergences = kernel(
        logp_fn, extra, ys, lps, grads, _step_sizes(eps, ys.shape[0]),
        np.ascontiguousarray(inv_mass, dtype=float),
        noise, log_u, bool(metropolis), shift, root,
    )  # fmt: skip
    return LangevinInfo(acceptance, divergences, n_steps)


def langevin_steps_vectorized(
    logp_grad: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    eps: float | np.ndarray,
    inv_mass: np.ndarray,
    n_steps: int,
    rng: np.random.Generator,
    metropolis: bool = True,
) -> LangevinInfo:
    """Run ``n_steps`` Langevin steps with a batched log density, in place.

    Same contract as :func:`langevin_steps_compiled`, with ``logp_grad(Y) -> (logp, grad)``
    evaluating all particles of ``Y`` (shape ``(n, d)``) in one call.
    """
    n, dim = ys.shape
    noise, log_u = _draw_noise(rng, n, n_steps, dim)
    eps_row = _step_sizes(eps, n)
    eps = eps_row[:, None]
    scale = np.sqrt(2.0 * eps * inv_mass)
    accept_sum = np.zeros(n)
    divergences = np.zeros(n, dtype=np.int64)
    for s in range(n_steps):
        y_prop = proposal_mean(ys, grads, eps, inv_mass) + scale * noise[:, s]
        lp_prop, grad_prop = logp_grad(y_prop)
        lp_prop = np.asarray(lp_prop, dtype=float).reshape(n)
        grad_prop = np.asarray(grad_prop, dtype=float).reshape(n, dim)
        finite = np.isfinite(lp_prop) & np.all(np.isfinite(grad_prop), axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            forward = (
                log_proposal_density(y_prop, proposal_mean(ys, grads, eps, inv_mass), 1.0, inv_mass)
                / eps_row
            )
            backward = (
                log_proposal_density(
                    ys, proposal_mean(y_prop, grad_prop, eps, inv_mass), 1.0, inv_mass
                )
                / eps_row
            )
            log_r = lp_prop - lps + backward - forward
        log_r = np.where(finite, log_r, -np.inf)
        divergences += ~finite | (log_r < -DIVERGENCE_THRESHOLD)
        accept_sum += np.exp(np.minimum(log_r, 0.0))
        move = finite & ((log_u[:, s] < log_r) if metropolis else True)
        ys[move] = y_prop[move]
        lps[move] = lp_prop[move]
        grads[move] = grad_prop[move]
    return LangevinInfo(accept_sum / n_steps, divergences, n_steps)


def hmc_steps_vectorized(
    logp_grad: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    eps: float | np.ndarray,
    n_leapfrog: int,
    rng: np.random.Generator,
    inv_mass: np.ndarray | None = None,
) -> LangevinInfo:
    """One Metropolis-adjusted Hamiltonian trajectory of ``n_leapfrog`` leapfrog steps for
    every particle, in place, with a batched log density: each step evaluates all particles in
    one call. ``inv_mass`` is a diagonal inverse mass ``(d,)`` shared by all (default: unit).

    Each particle has its own step size (``eps``: a scalar or ``(n,)``) and the same number of
    steps, neither depending on the state, so each particle follows an exact kernel. A
    trajectory that meets a non-finite log density or gradient is rejected and counted as a
    divergence, as is one whose energy error exceeds :data:`DIVERGENCE_THRESHOLD`.
    """
    n, dim = ys.shape
    eps = _step_sizes(eps, n)[:, None]
    inv_mass = np.ones(dim) if inv_mass is None else np.asarray(inv_mass, dtype=float)
    momentum = rng.standard_normal((n, dim)) / np.sqrt(inv_mass)
    log_u = np.log(rng.uniform(size=n))
    x = ys.copy()
    lp = np.asarray(lps, dtype=float).copy()
    grad = grads.copy()
    alive = np.ones(n, dtype=bool)
    p = momentum + 0.5 * eps * grad
    with np.errstate(invalid="ignore", over="ignore"):
        for step in range(n_leapfrog):
            x = x + eps * inv_mass * p
            lp_new, grad_new = logp_grad(x)
            lp = np.asarray(lp_new, dtype=float).reshape(n)
            grad = np.asarray(grad_new, dtype=float).reshape(n, dim)
            alive &= np.isfinite(lp) & np.all(np.isfinite(grad), axis=1)
            grad = np.where(alive[:, None], grad, 0.0)
            p = p + (eps if step < n_leapfrog - 1 else 0.5 * eps) * grad
        energy_error = (0.5 * np.sum(inv_mass * p * p, axis=1) - lp) - (
            0.5 * np.sum(inv_mass * momentum * momentum, axis=1) - lps
        )
    energy_error = np.where(alive & np.isfinite(energy_error), energy_error, np.inf)
    divergences = (energy_error > DIVERGENCE_THRESHOLD).astype(np.int64)
    acceptance = np.exp(-np.maximum(energy_error, 0.0))
    move = log_u < -energy_error
    ys[move], lps[move], grads[move] = x[move], lp[move], grad[move]
    return LangevinInfo(acceptance, divergences, n_leapfrog)
