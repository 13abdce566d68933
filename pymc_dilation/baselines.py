"""Baselines for the dilation path, run by the same engine at a matched gradient budget.

The paper (Chehab & Korba, 2024) compares annealed Langevin along the dilation path with plain
Langevin and with annealed Langevin along the *geometric* path
``log p_λ = (1 − λ) log π₀ + λ log π`` from a Gaussian reference ``π₀ = N(c, σ₀² I)``. These
functions implement both baselines with the kernels and step-size rule of
:func:`pymc_dilation.engine.explore.anneal`, so that a comparison measures the path and nothing
else, and :func:`annealed_dilation` runs the dilation path's annealing alone from one center (no
mode map, no exact refinement), as in the paper.

All three take a batched log density ``(n, d) -> ((n,), (n, d))`` and return the ``(n, d)``
particles and the gradient evaluations per particle.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pymc_dilation.engine.explore import anneal
from pymc_dilation.engine.kernels import langevin_steps_vectorized
from pymc_dilation.engine.population import PopulationTarget
from pymc_dilation.engine.schedules import make_schedule

__all__ = ["annealed_dilation", "geometric_annealed_langevin", "plain_langevin"]

LogpGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def annealed_dilation(
    logp_grad: LogpGrad,
    dim: int,
    n_particles: int,
    n_levels: int,
    steps_per_level: int,
    rng: np.random.Generator,
    center: np.ndarray | None = None,
    lambda_min: float = 1e-3,
    target_accept: float = 0.6,
    metropolis: bool = False,
) -> tuple[np.ndarray, int]:
    """Annealed Langevin along the dilation path from a Dirac at ``center``, no refinement.

    Unadjusted Langevin (``metropolis=False``) as in the paper; the step size adapts towards
    ``target_accept`` of the Metropolis ratio it would have had.
    """
    center = np.zeros(dim) if center is None else np.asarray(center, dtype=float)
    state = anneal(
        PopulationTarget(dim, logp_grad),
        np.tile(center, (n_particles, 1)),
        make_schedule("geometric", n_levels, lambda_min),
        rng,
        steps_per_level,
        target_accept,
        metropolis,
        initial_step=0.1,
    )
    return state.ys, state.n_grad


def geometric_annealed_langevin(
    logp_grad: LogpGrad,
    dim: int,
    n_particles: int,
    n_levels: int,
    steps_per_level: int,
    rng: np.random.Generator,
    center: np.ndarray | None = None,
    reference_sd: float = 1.0,
    lambda_min: float = 1e-3,
    target_accept: float = 0.6,
    metropolis: bool = False,
) -> tuple[np.ndarray, int]:
    """Annealed Langevin along the geometric path from ``N(center, reference_sd² I)``.

    Particles start as draws from the reference; level ``k`` targets
    ``(1 − λ_k) log π₀ + λ_k log π`` with the same geometric λ schedule as the dilation path.
    """
    center = np.zeros(dim) if center is None else np.asarray(center, dtype=float)

    def at_level(lam: float) -> LogpGrad:
        def tempered(x):
            lp, grad = logp_grad(x)
            diff = x - center
            lp0 = -0.5 * np.einsum("nd,nd->n", diff, diff) / reference_sd**2
            return (1.0 - lam) * lp0 + lam * lp, -(1.0 - lam) * diff / reference_sd**2 + lam * grad

        return tempered

    levels = make_schedule("geometric", n_levels, lambda_min)
    ys = center + reference_sd * rng.standard_normal((n_particles, dim))
    n_grad = _anneal(at_level, levels, ys, steps_per_level, rng, target_accept, metropolis)
    return ys, n_grad


def plain_langevin(
    logp_grad: LogpGrad,
    dim: int,
    n_particles: int,
    n_steps: int,
    rng: np.random.Generator,
    center: np.ndarray | None = None,
    reference_sd: float = 1.0,
    target_accept: float = 0.6,
    metropolis: bool = False,
    adapt_every: int = 4,
) -> tuple[np.ndarray, int]:
    """Langevin on the target alone from ``N(center, reference_sd² I)``, no annealing.

    The step size adapts every ``adapt_every`` steps by the same rule as the annealed samplers;
    each round of ``adapt_every`` steps costs ``adapt_every + 1`` gradients, like a level of the
    annealed samplers, so ``n_steps`` counts gradient evaluations in all.
    """
    center = np.zeros(dim) if center is None else np.asarray(center, dtype=float)
    ys = center + reference_sd * rng.standard_normal((n_particles, dim))
    rounds = np.ones(max(1, n_steps // (adapt_every + 1)))
    n_grad = _anneal(lambda _: logp_grad, rounds, ys, adapt_every, rng, target_accept, metropolis)
    return ys, n_grad


def _anneal(
    logp_grad_at: Callable[[float], LogpGrad],
    levels: np.ndarray,
    ys: np.ndarray,
    steps_per_level: int,
    rng: np.random.Generator,
    target_accept: float,
    metropolis: bool,
    initial_step: float = 0.1,
) -> int:
    """Langevin steps on ``ys`` in place, level after level; the gradient evaluations spent."""
    inv_mass = np.ones(ys.shape[1])
    log_eps = np.full(len(ys), np.log(initial_step))  # one step size per particle, as anneal
    n_grad = 0
    for lam in levels:
        logp_grad = logp_grad_at(float(lam))
        lps, grads = logp_grad(ys)
        info = langevin_steps_vectorized(
            logp_grad, ys, lps, grads, np.exp(log_eps), inv_mass, steps_per_level, rng,
            metropolis,
        )  # fmt: skip
        n_grad += steps_per_level + 1
        log_eps += 2.0 * (info.acceptance_rate - target_accept)
    return n_grad
