"""Exploration: particles annealed along their own dilation paths.

Every particle ``i`` has its own center ``c_i`` and follows the dilation path from a Dirac at
``c_i`` to the target. The path's score stays closed-form per particle (see
:mod:`pymc_dilation.engine.path`), and in the target coordinates the engine uses, level ``k`` is
an ordinary Langevin step on the target while moving to the next level contracts each particle
towards its own center, so many centers cost nothing more than one.

Why many centers: from a single Dirac every particle receives the same drift
``∇ log π(c) / √λ`` at small λ, far larger than the Langevin noise, so the whole population flows
into the one basin the gradient at ``c`` points to (DESIGN.md, "a single Dirac start moves as
one body"). Centers spread over the region where the posterior may put mass (prior draws, an
overdispersed cloud) let each particle's path end in the basin around its center, so every mode
whose basin holds a center is reached. The exploration decides only *which* modes are found:
the share of particles each mode receives is a basin-of-attraction volume, not the posterior
mass, and :mod:`pymc_dilation.engine.weights` corrects it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from pymc_dilation.engine.path import rescale_between_levels

__all__ = ["AnnealState", "anneal", "overdispersed_cloud", "CLOUD_SCALES"]

CLOUD_SCALES = (1.0, 10.0)
"""Range of the log-uniform radius scale of :func:`overdispersed_cloud`, in whitened units."""


class AnnealState(NamedTuple):
    """Particles at λ = 1 after the annealing.

    Attributes
    ----------
    ys, lps, grads : numpy.ndarray
        Positions ``(n, d)``, log densities ``(n,)`` and gradients ``(n, d)``.
    step : numpy.ndarray
        ``(n,)`` each particle's adapted step size at the end.
    n_grad : int
        Gradient evaluations per particle.
    """

    ys: np.ndarray
    lps: np.ndarray
    grads: np.ndarray
    step: np.ndarray
    n_grad: int


def overdispersed_cloud(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """``n`` centers about the origin of whitened coordinates, overdispersed at several scales.

    Each center is ``s · ξ`` with ``ξ`` standard normal and ``s`` log-uniform on
    :data:`CLOUD_SCALES`: in whitened coordinates the Laplace approximation's mode is the
    origin and its posterior sd is one, so the cloud reaches from the bulk of the mode it
    describes to ten times its width, for models whose prior cannot be drawn from (``Flat``).
    """
    low, high = np.log(CLOUD_SCALES[0]), np.log(CLOUD_SCALES[1])
    scales = np.exp(rng.uniform(low, high, size=(n, 1)))
    return scales * rng.standard_normal((n, dim))


def anneal(
    target,
    centers: np.ndarray,
    levels: np.ndarray,
    rng: np.random.Generator,
    steps_per_level: int,
    target_accept: float,
    metropolis: bool,
    initial_step: float,
    record: Callable | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnnealState:
    """Anneal one particle per row of ``centers`` along its own path, all in batched calls.

    Parameters
    ----------
    target : PopulationTarget
        The density (see :mod:`pymc_dilation.engine.population`).
    centers : numpy.ndarray
        ``(n, d)`` centers; each particle starts at its own. One shared center is ``(1, d)``
        broadcast to ``n`` rows by the caller.
    levels : numpy.ndarray
        Validated λ schedule ending at 1.
    rng : numpy.random.Generator
    steps_per_level : int
        Langevin steps per particle and level.
    target_accept : float
        Target acceptance of each particle's own step size (Robbins–Monro on its ``log eps``
        after each level). One shared step would have to suit the particle in the stiffest
        region (a prior draw where a scale parameter is tiny): measured on a three-component
        ``NormalMixture``, a shared step fell to 0.003 while a quarter of the particles
        still diverged at every step.
    metropolis : bool
        MALA (True) or unadjusted Langevin (False).
    initial_step : float
        First step size.
    record : callable, optional
        ``record(lam, eps, info, jump)`` after each level.
    progress : callable, optional
        Called with the number of levels done.

    Returns
    -------
    AnnealState
        Approximate, not exact: the annealing transports particles to the modes; the exact
        correction happens at λ = 1 afterwards.
    """
    ys = np.array(centers, dtype=float, copy=True)
    lps, grads = target.logp_grad_batch(ys)
    log_eps = np.full(len(ys), np.log(initial_step))
    n_grad = 1
    for k, lam in enumerate(levels):
        if k > 0:
            ys = rescale_between_levels(ys, centers, levels[k - 1], lam)
            lps, grads = target.logp_grad_batch(ys)
            n_grad += 1
        eps = np.exp(log_eps)
        info = target.langevin(ys, lps, grads, eps, np.ones(ys.shape[1]), steps_per_level, rng,
                               metropolis)  # fmt: skip
        n_grad += steps_per_level
        log_eps += 2.0 * (info.acceptance_rate - target_accept)
        if record is not None:
            record(float(lam), eps, info, np.nan)
        if progress is not None:
            progress(k + 1)
    return AnnealState(ys, lps, grads, np.exp(log_eps), n_grad)
