"""The particle engine: a population annealed along the dilation path, then refined exactly.

Stage 1, annealing. ``n`` particles start at the center and follow the λ schedule together. At
each level every particle makes ``steps_per_level`` Langevin steps (in target coordinates, see
:mod:`pymc_dilation.engine.path`); between levels the particles contract towards the center. All
particles are evaluated in one compiled call per step. One step size is shared by the population
and adapted after each level towards ``target_accept`` (Robbins–Monro on ``log eps``).

Stage 2, exact refinement at λ = 1. The annealing alone does not give the right mode weights (a
Dirac start carries no importance weights), so the refinement alternates Metropolis-adjusted
Langevin sweeps with **mode-jump moves** (Tjelmeland & Hegstad, 2001): the particles are moved
uphill by preconditioned gradient ascent to locate the modes they sit in, the distinct modes'
centers ``m_1..m_K`` are found by merging nearby optima, and each jump proposes
``y' = y + (m_b - m_a)`` with the ordered pair ``(a, b)`` drawn uniformly. The set of translations
is fixed and symmetric under negation, so the proposal is symmetric and the Metropolis ratio is
``pi(y') / pi(y)``: every particle's chain leaves the posterior invariant. For modes of similar
shape a jump lands in the new mode's bulk and is accepted in proportion to the weight ratio,
which moves mass between modes in a few sweeps. Differential-evolution moves were the other
candidate (DESIGN.md); their proposals carry the within-mode noise of two particles and are
hardly ever accepted in 50 dimensions, while a translation between mode centers carries none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from pymc_dilation.engine.kernels import langevin_steps_compiled, langevin_steps_vectorized
from pymc_dilation.engine.laplace import LaplaceApproximation
from pymc_dilation.engine.path import rescale_between_levels

__all__ = [
    "PopulationTarget",
    "PopulationResult",
    "run_population",
    "refine_population",
    "find_mode_centers",
]


@dataclass
class PopulationTarget:
    """A log density as the engine sees it.

    Attributes
    ----------
    dim : int
        Dimension.
    logp_grad_batch : callable
        ``(n, d) -> ((n,), (n, d))``, all particles in one call.
    point_fn : compiled function, optional
        First-class compiled point density (see
        :func:`~pymc_dilation.engine.kernels.point_function`);
        when given, whole runs of Langevin steps go through one compiled call.
    extra : numpy.ndarray
        Second argument of ``point_fn``.
    laplace : LaplaceApproximation, optional
        When set, the particles live in its whitened coordinates (see :meth:`whitened`).
    """

    dim: int
    logp_grad_batch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    point_fn: object = None
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0))
    laplace: LaplaceApproximation | None = None

    def whitened(self, laplace: LaplaceApproximation) -> PopulationTarget:
        """The same density in the whitened coordinates ``z`` of ``laplace``.

        ``logp_grad_batch`` of the result takes and differentiates in ``z``; the compiled
        driver maps each proposal itself, so whole runs of steps stay one compiled call.
        """
        return replace(self, logp_grad_batch=laplace.whiten(self.logp_grad_batch), laplace=laplace)

    def langevin(self, ys, lps, grads, eps, inv_mass, n_steps, rng, metropolis=True):
        """Langevin steps on all particles, in place, by the fastest driver available."""
        if self.point_fn is not None:
            shift, root = (None, None) if self.laplace is None else self.laplace.affine()
            return langevin_steps_compiled(
                self.point_fn, self.extra, ys, lps, grads, eps, inv_mass, n_steps, rng,
                metropolis, shift, root,
            )  # fmt: skip
        return langevin_steps_vectorized(
            self.logp_grad_batch, ys, lps, grads, eps, inv_mass, n_steps, rng, metropolis
        )


@dataclass
class PopulationResult:
    """Final particles and per-stage statistics of one run.

    Attributes
    ----------
    samples : numpy.ndarray
        Particles ``(n, d)`` at λ = 1 after refinement.
    logp : numpy.ndarray
        Their log densities.
    stage_stats : dict of numpy.ndarray
        Per stage (annealing levels, then refinement sweeps): ``dilation``, ``step_size``,
        ``acceptance_rate``, ``divergences`` and ``jump_acceptance`` (NaN while annealing).
    mode_centers : numpy.ndarray
        The mode centers used by the jump moves, ``(K, d)``.
    n_grad : int
        Gradient evaluations per particle.
    """

    samples: np.ndarray
    logp: np.ndarray
    stage_stats: dict[str, np.ndarray]
    mode_centers: np.ndarray
    n_grad: int


def find_mode_centers(
    target: PopulationTarget,
    ys: np.ndarray,
    grads: np.ndarray,
    step: float,
    inv_mass: np.ndarray,
    n_iter: int = 20,
    max_modes: int = 16,
    min_share: float = 0.01,
) -> tuple[np.ndarray, int]:
    """Locate the modes the particles sit in, by batched preconditioned gradient ascent.

    Optima closer than a tolerance (a tenth of the typical within-particle-cloud scale) are
    merged greedily. Modes holding fewer than ``min_share`` of the particles are dropped, at most
    ``max_modes`` kept. Returns the centers ``(K, d)`` and the gradient evaluations spent.
    """
    x, g = ys.copy(), grads.copy()
    rate = step * inv_mass
    lp = target.logp_grad_batch(x)[0]
    for _ in range(n_iter):
        x_new = x + rate * g
        lp_new, g_new = target.logp_grad_batch(x_new)
        better = np.isfinite(lp_new) & (lp_new >= lp)
        x[better], g[better], lp[better] = x_new[better], g_new[better], lp_new[better]
        rate = np.where(better[:, None], rate * 1.1, rate * 0.5)
    scale = np.sqrt(inv_mass)
    tol = 0.1 * np.sqrt(x.shape[1])
    order = np.argsort(-lp)
    centers, counts = [], []
    for i in order:
        z = x[i] / scale
        for k, c in enumerate(centers):
            if np.linalg.norm(z - c) < tol:
                counts[k] += 1
                break
        else:
            centers.append(z)
            counts.append(1)
    keep = np.argsort(counts)[::-1][:max_modes]
    keep = [k for k in keep if counts[k] >= min_share * len(x)]
    return np.array([centers[k] * scale for k in keep]).reshape(-1, x.shape[1]), n_iter + 1


def _jump(target, ys, lps, grads, centers, rng):
    n_modes = len(centers)
    a = rng.integers(n_modes, size=len(ys))
    b = (a + rng.integers(1, n_modes, size=len(ys))) % n_modes
    y_prop = ys + centers[b] - centers[a]
    lp_prop, grad_prop = target.logp_grad_batch(y_prop)
    with np.errstate(invalid="ignore"):
        accept = np.isfinite(lp_prop) & (np.log(rng.uniform(size=len(ys))) < lp_prop - lps)
    ys[accept], lps[accept], grads[accept] = y_prop[accept], lp_prop[accept], grad_prop[accept]
    return accept.mean()


def refine_population(
    target: PopulationTarget,
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    rng: np.random.Generator,
    step: float,
    target_accept: float,
    sweeps: int,
    steps: int,
    record: Callable | None = None,
    on_sweep: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Exact refinement at λ = 1, in place: MALA sweeps and mode jumps (see module docstring).

    The mode centers are found once, from the particles as they arrive, and then held fixed,
    so every sweep is a posterior-invariant Markov kernel for each particle. The step size adapts
    during the first half of the sweeps only. Returns the centers and the gradient evaluations
    per particle.
    """
    dim = ys.shape[1]
    n_grad = 0
    centers = np.zeros((0, dim))
    inv_mass = np.ones(dim)
    log_eps = np.log(step)
    if sweeps > 0:
        centers, n_grad = find_mode_centers(target, ys, grads, step, inv_mass)
        if len(centers) > 1:
            nearest = np.argmin(((ys[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
            within = ys - centers[nearest]
        else:
            within = ys - ys.mean(axis=0)
        inv_mass = np.maximum(within.var(axis=0), 1e-8)
        log_eps = np.log(0.5)  # in preconditioned units; re-adapted below
    for sweep in range(sweeps):
        eps = float(np.exp(log_eps))
        info = target.langevin(ys, lps, grads, eps, inv_mass, steps, rng, True)
        n_grad += steps
        if sweep < sweeps // 2:
            log_eps += (
                2.0 * (float(np.mean(info.acceptance_rate)) - target_accept) / np.sqrt(sweep + 1)
            )
        jump = np.nan
        if len(centers) > 1:
            jump = _jump(target, ys, lps, grads, centers, rng)
            n_grad += 1
        if record is not None:
            record(1.0, eps, info, jump)
        if on_sweep is not None:
            on_sweep(sweep)
    return centers, n_grad


def run_population(
    target: PopulationTarget,
    n_particles: int,
    center: np.ndarray,
    levels: np.ndarray,
    rng: np.random.Generator,
    steps_per_level: int = 4,
    target_accept: float = 0.6,
    anneal_metropolis: bool = True,
    refine_sweeps: int = 50,
    refine_steps: int = 4,
    initial_step: float = 0.1,
    progress: Callable[[int], None] | None = None,
) -> PopulationResult:
    """Anneal ``n_particles`` along ``levels`` from ``center``, then refine exactly at λ = 1.

    Parameters
    ----------
    target : PopulationTarget
    n_particles : int
    center : numpy.ndarray
        Center of the path, where every particle starts.
    levels : numpy.ndarray
        Validated λ schedule ending at 1.
    rng : numpy.random.Generator
    steps_per_level : int
        Langevin steps per particle and level.
    target_accept : float
        Target acceptance of the shared step size.
    anneal_metropolis : bool
        MALA (True) or unadjusted Langevin (False) during the annealing.
    refine_sweeps : int
        Refinement sweeps at λ = 1, each ``refine_steps`` MALA steps then one mode jump.
    refine_steps : int
        MALA steps per sweep.
    initial_step : float
        First step size.
    progress : callable, optional
        Called with the number of stages completed so far.
    """
    dim = target.dim
    ys = np.tile(np.asarray(center, dtype=float), (n_particles, 1))
    lps, grads = target.logp_grad_batch(ys)
    inv_mass = np.ones(dim)
    log_eps = np.log(initial_step)
    stats: dict[str, list[float]] = {
        k: []
        for k in ("dilation", "step_size", "acceptance_rate", "divergences", "jump_acceptance")
    }
    n_grad = 1

    def record(lam, eps, info, jump):
        stats["dilation"].append(lam)
        stats["step_size"].append(eps)
        stats["acceptance_rate"].append(float(info.acceptance_rate.mean()))
        stats["divergences"].append(int(info.divergences.sum()))
        stats["jump_acceptance"].append(jump)

    for k, lam in enumerate(levels):
        if k > 0:
            ys = rescale_between_levels(ys, center, levels[k - 1], lam)
            lps, grads = target.logp_grad_batch(ys)
            n_grad += 1
        eps = float(np.exp(log_eps))
        info = target.langevin(
            ys, lps, grads, eps, inv_mass, steps_per_level, rng, anneal_metropolis
        )
        n_grad += steps_per_level
        log_eps += 2.0 * (float(np.mean(info.acceptance_rate)) - target_accept)
        record(float(lam), eps, info, np.nan)
        if progress is not None:
            progress(k + 1)

    centers, spent = refine_population(
        target,
        ys,
        lps,
        grads,
        rng,
        float(np.exp(log_eps)),
        target_accept,
        refine_sweeps,
        refine_steps,
        record,
        lambda sweep: progress and progress(len(levels) + sweep + 1),
    )
    n_grad += spent
    return PopulationResult(
        samples=ys,
        logp=lps,
        stage_stats={k: np.asarray(v) for k, v in stats.items()},
        mode_centers=centers,
        n_grad=n_grad,
    )
