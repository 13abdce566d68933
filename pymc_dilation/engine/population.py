"""The population sampler's stages chained into one run: explore, map, weigh, refine.

1. **Explore** (:mod:`~pymc_dilation.engine.explore`): particles follow the dilation path
   from their own centers to the target; all are stepped in one compiled call. Where ascents
   from the centers settle on one mode, none is annealed (:func:`map_population_of`).
2. **Map** (:mod:`~pymc_dilation.engine.modes`): the particles climb to their modes, which are
   merged by the hill–valley test; each mode gets a local Gaussian.
3. **Weigh** (:mod:`~pymc_dilation.engine.weights`): importance sampling from the mixture of
   local Gaussians estimates each mode's weight and the normalising constant; the particles are
   resampled by their importance weights. When those cannot be trusted (too uneven to
   resample, or a Pareto k̂ test fails), sequential Monte Carlo carries the particles from the
   mixture to the target instead (:mod:`~pymc_dilation.engine.tempering`), and gives the
   weights and the evidence.
4. **Refine** at λ = 1, exactly: sweeps of Metropolis-adjusted Langevin steps, each followed by
   an independence Metropolis–Hastings jump from the mixture of local Gaussians. Both kernels
   leave the target invariant, so whatever the earlier stages got wrong, the population's law
   approaches the target as sweeps are added; what is exact and what asymptotic is said in each
   module. The sweeps stop once the population passes its own checks (below) with a margin.
5. **Check** the refined population (:mod:`~pymc_dilation.engine.convergence`): the Stein
   identity of the target, the two halves of the particles, their ESS in index order, stuck
   and unmoved particles; figures only, no log density evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from pymc_dilation.engine.adaptation import shrunk_root
from pymc_dilation.engine.blocks import (
    BLOCKS_MAX_DIM,
    factor_groups,
    interaction_blocks,
    restricted,
)
from pymc_dilation.engine.convergence import (
    SMALLER_IS_WORSE,
    STOP_MARGIN,
    failed_checks,
    population_checks,
)
from pymc_dilation.engine.explore import AnnealState, anneal
from pymc_dilation.engine.kernels import (
    LangevinInfo,
    hmc_steps_vectorized,
    langevin_steps_compiled,
    langevin_steps_vectorized,
)
from pymc_dilation.engine.laplace import (
    TRIANGULAR_MIN_DIM,
    LaplaceApproximation,
    root_log_det,
    upper_covariance_root,
)
from pymc_dilation.engine.metric import estimate_metric
from pymc_dilation.engine.modes import (
    ModeMap,
    add_modes,
    ascend,
    known_optimum,
    map_modes,
    moment_match,
)
from pymc_dilation.engine.tempering import (
    TemperedPopulation,
    evidence_change,
    joined_passes,
    temper,
)
from pymc_dilation.engine.weights import (
    MixtureProposal,
    WeightEstimate,
    estimate_weights,
    independence_jump,
    mode_proposal,
    systematic_resample,
)

__all__ = [
    "PopulationTarget",
    "PopulationResult",
    "MappedPopulation",
    "map_population",
    "map_growing_population",
    "map_population_of",
    "run_population",
    "refine",
    "weigh_and_discover",
    "map_factors",
]


VECTORIZED_MIN_DIM = 50
"""From this dimension on, whitened particles take their Langevin steps in batched calls
rather than in one compiled call: the compiled driver whitens each particle by its own
``O(d²)`` loop, the batched one all of them by one BLAS product. Annealing 128 particles
(20 levels of 4 steps, one thread) took 0.60 -> 0.24 s at d = 205, 1.17 -> 0.88 s at d = 200
(a mixture of two correlated Gaussians) and 20.2 -> 1.65 s at d = 1005; at d = 45 both take
0.08 s, at d = 10 the compiled call is twice as fast."""


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
    fold : callable, optional
        ``(n, d) -> (n, d)``: each point's copy under an exact symmetry of the density, in a
        fixed fundamental domain (:meth:`~pymc_dilation.engine.symmetry.SymmetryGroup.canonical`).
        When set, particles are folded before they are mapped, so the map holds one copy of
        each mode (a mixture of 4 exchangeable components: 85 modes, 24 of each, otherwise).
    report : callable, optional
        ``report(message)`` is called as each stage starts (climbing, annealing, mapping,
        weighing), for progress on models where a stage takes minutes.
    """

    dim: int
    logp_grad_batch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    point_fn: object = None
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0))
    laplace: LaplaceApproximation | None = None
    fold: Callable[[np.ndarray], np.ndarray] | None = None
    report: Callable[[str], None] | None = None

    def stage(self, message: str) -> None:
        """Say that a stage starts (see :attr:`report`)."""
        if self.report is not None:
            self.report(message)

    def whitened(self, laplace: LaplaceApproximation) -> PopulationTarget:
        """The same density in the whitened coordinates ``z`` of ``laplace``.

        ``logp_grad_batch`` of the result takes and differentiates in ``z``; the compiled
        driver maps each proposal itself, so whole runs of steps stay one compiled call.
        """
        combined = laplace
        if self.laplace is not None:  # compose the maps: the compiled driver applies one
            combined = LaplaceApproximation(
                self.laplace.to_density(laplace.mode),
                self.laplace.root @ laplace.root,
                laplace.n_grad,
                laplace.converged,
            )
        return replace(
            self,
            logp_grad_batch=laplace.whiten(self.logp_grad_batch),
            laplace=combined,
            fold=_conjugated(self.fold, laplace),
        )

    def folded(self, ys: np.ndarray, lps: np.ndarray, grads: np.ndarray):
        """``(ys, lps, grads)`` with the points moved by :attr:`fold` (unchanged without it;
        log densities and gradients evaluated again where a point moved)."""
        return fold_points(self.fold, self.logp_grad_batch, ys, lps, grads)

    def langevin(self, ys, lps, grads, eps, inv_mass, n_steps, rng, metropolis=True):
        """Langevin steps on all particles, in place, by the fastest driver available: one
        compiled call for all steps, except for several whitened particles from
        :data:`VECTORIZED_MIN_DIM` dimensions on, whose whitening is one matrix product over
        all of them per step."""
        batched = self.laplace is not None and len(ys) > 1 and self.dim >= VECTORIZED_MIN_DIM
        if self.point_fn is not None and not batched:
            shift, root = (None, None) if self.laplace is None else self.laplace.affine()
            return langevin_steps_compiled(
                self.point_fn, self.extra, ys, lps, grads, eps, inv_mass, n_steps, rng,
                metropolis, shift, root,
            )  # fmt: skip
        return langevin_steps_vectorized(
            self.logp_grad_batch, ys, lps, grads, eps, inv_mass, n_steps, rng, metropolis
        )


def _conjugated(move, laplace: LaplaceApproximation):
    """A map of points in the density's coordinates as one of ``laplace``'s whitened ones."""
    if move is None:
        return None

    def whitened_move(zs: np.ndarray) -> np.ndarray:
        return laplace.to_whitened(move(laplace.to_density(zs)))

    return whitened_move


@dataclass
class PopulationResult:
    """Final particles, the mode map, the weight estimates and per-stage statistics of one run.

    Attributes
    ----------
    samples : numpy.ndarray
        Particles ``(n, d)`` at λ = 1 after refinement.
    logp : numpy.ndarray
        Their log densities.
    labels : numpy.ndarray
        ``(n,)`` mode of each final particle (see
        :meth:`~pymc_dilation.engine.weights.MixtureProposal.nearest_mode`).
    diverging : numpy.ndarray
        ``(n,)`` bool: whether a refinement step of the particle diverged.
    modes : ModeMap
        The modes found.
    estimate : WeightEstimate
        Importance-sampling mode weights and log evidence.
    stage_stats : dict of numpy.ndarray
        Per stage (annealing levels, then refinement sweeps): ``dilation``, ``step_size`` (the
        particles' median), ``acceptance_rate`` (the particles' mean), ``divergences``
        (running count of divergent steps over all particles, as the step method counts them)
        and ``jump_acceptance`` (NaN while annealing).
    n_grad : int
        Gradient evaluations per particle (importance draws counted as one per particle).
    checks : dict of float
        Convergence figures of the refined population (see
        :func:`~pymc_dilation.engine.convergence.population_checks`).
    factors : list of numpy.ndarray, optional
        The groups of coordinates sampled separately, when the density is a product whose
        factors have several modes each (see :func:`_run_factors`); None otherwise.
    """

    samples: np.ndarray
    logp: np.ndarray
    labels: np.ndarray
    diverging: np.ndarray
    modes: ModeMap
    estimate: WeightEstimate
    stage_stats: dict[str, np.ndarray]
    n_grad: int
    checks: dict[str, float] = field(default_factory=dict)
    factors: list[np.ndarray] | None = None


PROPOSAL_FLOOR = 0.5
"""Share of the importance proposal spread evenly over the modes (the rest follows the
particles' occupancy after exploration), so that small basins are proposed too."""

MIN_RESAMPLE_ESS = 0.05
"""The refinement starts from the importance draws, resampled, when their effective sample size
is at least this share of the particles; otherwise (a mode far from its Gaussian, where a few
draws would be repeated many times) from the annealed particles as they are."""

DRAWS_PER_MODE = 32
"""Importance draws per mode, at least, when a population's map is weighed (one per particle
when there are more particles). With as many draws as particles, a map of many modes got a
few draws each: on a 4-component NormalMixture (24 label modes, 8 parameters) a chain's 256
draws over 34 modes had an importance ESS of 6, so its map was judged unreliable and the
chain ran without jumps, in one labelling for the whole run."""

DIFFUSION_STEPS = 4
"""MALA steps per diffusion sweep (see :func:`map_growing_population`)."""

DIFFUSION_SWEEPS = 5
"""MALA sweeps of a mapped population looking for modes the annealing missed (see
:func:`_diffuse`)."""

FIRST_PARTICLES = 128
"""Particles of a population's first batch (see :func:`map_growing_population`); more only
when they find several modes."""

CHECK_PARTICLES = 32
"""Particles annealed to check a map that the probe's ascents found to hold one mode (see
:func:`_check_from_annealed_starts`), along every fourth level of the schedule (ending at 1):
on the 200-D mixtures 20, 10 and 5 levels sent the same particles into the other basin (3-6
of 32, on 5 chains), and a fourth of the levels costs a fourth as much."""

CHECK_ASCENT_ITER = 40
"""The check's ascents may evaluate this many rows per particle in all (see
:func:`_check_from_annealed_starts`): ascents that end early leave their share to those still
climbing, up to :data:`CHECK_ASCENT_MAX_ITER` iterations."""

CHECK_ASCENT_MAX_ITER = 200
"""The most L-BFGS iterations of any one of the check's ascents."""

CHECK_MIN_DIM = 50
"""The check runs from this dimension on. The basins' shares of a broad law of centers go to
0 or 1 exponentially in the dimension: on the two-mode mixtures of the dimension suite, the
smaller basin held 27-83 % of 128 prior draws' ascents at d = 20, 5-28 % at d = 100 and 0-8 %
at d = 200. Below it the probe's ascents reach every basin of weight, and the check only
cost time: 1 s a chain on a 4-parameter GARCH model whose log density is a long recursion."""

HMC_LENGTH = 3.0
"""Length of a refinement trajectory in whitened units (about the posterior's sd there).
After the bridge, 1.5 left a latent GP's length scale 0.29 sd off with every check quiet
(30 sweeps mended it) and stochastic volatility 1.3 sd off; 3.0 gave 0.08 and 0.42 for 15-25 %
more wall on the funnel and dimension suites, all else within 0.1 sd as before."""
HMC_MAX_LEAPFROG = 64
"""Leapfrog steps of a refinement trajectory at most."""
HMC_TARGET_ACCEPT = 0.8
"""Acceptance the refinement's HMC step sizes adapt to."""

BRIDGE_PASSES = 4
"""Bridges from the map to the posterior at most (see :func:`_tempered`); at least two run."""

BRIDGE_AGREEMENT = 0.5
"""Change of ``log Z`` (nats) between two successive bridges below which no further one runs;
a larger change after :data:`BRIDGE_PASSES` is reported (``bridge_evidence_change``). On
rotated log-gamma products of 20-200 dimensions (log Z exact) successive bridges differed by
0.03-0.33 and the second's error was at most 0.10; on stochastic volatility (250 returns)
they went 990.3, 1003.2, 1006.2, 1006.8."""

PILOT_SHARE = 0.25
"""Share of the particles the first bridge runs with (at least :data:`PILOT_MIN`). It starts
from the map's Gaussians, which can be far from the posterior (a hierarchy's Laplace
approximation: 44 levels where the next bridge needs 6), and serves only to place the next
one's Gaussians: with all the particles it was 8.5 of 14.2 s on a 205-parameter hierarchy.
Measured, all particles → a quarter (PyMC 6.4, seed 1): hierarchical-g100-2 14.2 → 7.9 s,
centered-normal-g200-weak-1 8.7 → 6.4 s, centered radon 12.7 → 9.4 s, stochastic
volatility 30.3 → 21.0 s, moments within 0.1 sd either way."""
PILOT_MIN = 256
"""Particles of the first bridge at least (all of them when there are fewer)."""

ADAPTED_ESS = 0.5
"""Importance ESS, as a share of the draws, below which :func:`map_population_of` moves the
map's Gaussians to the resampled draws' moments (:func:`_moved_to_draws`) and weighs again.
The probe's Gaussians are the curvature at each optimum, narrower than a curved or skewed
posterior: on a banana (``x1 - (x0² - 4) / 2 ~ N(0, 1)``, seeds 3-12) the importance weights
had Pareto k̂ 0.47-1.8, and the copies the resampling made of the heavy draws were still
alike after the refinement (the particles worth 64-1468 independent draws of 2000). Two
rounds: k̂ 0.24-0.69 but one, and 727-1297."""

ADAPT_ROUNDS = 2
"""Times at most that :func:`map_population_of` does so."""

REFINE_ADAPT_SWEEPS = 5
"""Refinement sweeps, at most, in which the step sizes (and HMC's mass) adapt; the kernels are
fixed after them (half of ``refine_sweeps`` when that is fewer), and the population's checks
may stop the refinement from the next sweep on (:data:`STOP_WHEN_CONVERGED`)."""

STOP_WHEN_CONVERGED = True
"""Whether the refinement stops at the first fixed-kernel sweep after which the population
passes its own convergence checks (:func:`~pymc_dilation.engine.convergence.failed_checks`),
``refine_sweeps`` being the most it runs."""

GROWTH_WEIGHT = 1e-3
"""Estimated weight a mode needs to count when :func:`map_growing_population` decides whether
a doubling found more modes. Real local modes of negligible mass (a mixture likelihood's
degenerate optima, 270 nats below the peak on posteriordb's low_dim_gauss_mix) are kept in the
map, but finding more of them is no reason to double the population (it did so up to 1024
particles and 140 000 gradients per chain there)."""

DISCOVERY_ESS = 0.1
"""Importance ESS, as a share of the draws, below which :func:`weigh_and_discover` looks
among the heaviest draws for modes the map lacks."""

DISCOVERY_DRAWS = 16
"""Heaviest importance draws, at most, that climb to their modes (see :func:`_heavy_draws`)."""

WIDEN_MIN_ESS = 2.0
"""Importance ESS below which :func:`weigh_and_discover` does not widen a mode to the weighted
moments of its draws: one draw holds all the weight, and its "moments" are a point (the 50/50
mixture with it halves the Gaussian's variance in every other direction). On a 500-group
hierarchy (1005 parameters) every round's ESS was 1.00 and the two widenings and weighings
after the first cost 0.6 s of a 2.8 s tuning population, to no effect on the estimate."""

DISCOVERY_ROUNDS = 2
"""Times at most that :func:`weigh_and_discover` adds what the heaviest draws found and weighs
again."""

UNDERVALUED = 20.0
"""Importance weight, relative to the mean, above which a draw shows mass the mode map's
Gaussians undervalue (``π / (Z q)``; about a mode's weight over its share of the proposal
where the Gaussians describe the posterior). There the independence jump is sticky: a jump
out is accepted with probability ``w(x') / w(x)``."""

JUMP_FLOOR = 0.1
"""Share of the jump proposal spread evenly over the modes (the rest follows the estimated
weights)."""


def _average_mode_gaussian(roots: np.ndarray, weights: np.ndarray) -> LaplaceApproximation:
    """``N(0, Σ_k w_k R_k R_kᵀ)``: the modes' covariances averaged by their weights."""
    covariances = roots @ np.swapaxes(roots, 1, 2)
    average = np.einsum("k,kij->ij", weights / weights.sum(), covariances)
    dim = average.shape[0]
    jittered = average + 1e-10 * np.trace(average) / dim * np.eye(dim)
    root = _composable_root(jittered)
    if root is None:
        root = np.linalg.cholesky(jittered)
    return LaplaceApproximation(np.zeros(dim), root, 0, True)


def _composable_root(covariance: np.ndarray) -> np.ndarray | None:
    """An upper-triangular root of ``covariance`` from :data:`TRIANGULAR_MIN_DIM` dimensions
    on (None below, or when it is not positive definite).

    Frames and local Gaussians are composed with the Laplace whitening, an upper triangle
    (or one with its rows permuted); an upper-triangular root keeps the product a triangle,
    so every evaluation maps its rows by BLAS's triangular product (hierarchical-g200: 1.6 of
    sample_dilation's 5.5 s were general d x d products of composed dense roots). Below
    :data:`TRIANGULAR_MIN_DIM` the triangular product is no faster, and the roots stay as they
    were (the orientation changes the bridge's moves, whose diagonal mass is estimated in frame
    coordinates: see benchmarks/RESULTS.md).
    """
    if len(covariance) < TRIANGULAR_MIN_DIM:
        return None
    return upper_covariance_root(covariance)


def _robust_root(ys: np.ndarray) -> np.ndarray:
    """A square root of the covariance of the particles within their inner 90 % (by distance
    from the coordinatewise median), so that a few strays do not set the scale."""
    centered = ys - np.median(ys, axis=0)
    distance = np.linalg.norm(centered, axis=1)
    inner = ys[distance <= np.quantile(distance, 0.9)]
    dim = ys.shape[1]
    cov = np.atleast_2d(np.cov(inner.T)) if len(inner) > dim else np.eye(dim)
    return np.linalg.cholesky(cov + 1e-10 * max(np.trace(cov), 1e-300) / dim * np.eye(dim))


def replace_invalid(ys, lps, labels, diverging, rng) -> float:
    """Replace, in place, particles without a finite log density or position by copies of
    valid ones drawn uniformly; returns the share replaced.

    Such a particle has escaped (up a funnel's mouth: a GP's amplitude at 1.7e6 with a NaN
    log density was reported as a draw) or diverged, and is no draw of the posterior. The
    particles are equally weighted after the resampling, so copies of valid ones are what the
    population can still vouch for; the share is reported (``invalid_share``) and warned about
    (:func:`pymc_dilation.diagnostics.convergence_reasons`). If none is valid, nothing is
    replaced.
    """
    invalid = ~np.isfinite(lps) | ~np.all(np.isfinite(ys), axis=1)
    if invalid.any() and not invalid.all():
        pick = rng.choice(np.flatnonzero(~invalid), size=int(invalid.sum()))
        ys[invalid], lps[invalid], labels[invalid] = ys[pick], lps[pick], labels[pick]
        diverging[invalid] = True
    return float(invalid.mean())


def refine(
    target: PopulationTarget,
    ys: np.ndarray,
    lps: np.ndarray,
    grads: np.ndarray,
    proposal: MixtureProposal | None,
    rng: np.random.Generator,
    step: float | np.ndarray,
    target_accept: float,
    sweeps: int,
    steps: int,
    inv_mass: np.ndarray | None = None,
    record: Callable | None = None,
    on_sweep: Callable[[int], None] | None = None,
    hmc: bool = False,
    adapt_sweeps: int | None = None,
    converged: Callable[[np.ndarray], bool] | None = None,
) -> int:
    """Exact refinement at λ = 1, in place; returns the gradient evaluations per particle.

    Each sweep runs ``steps`` MALA steps (with ``hmc``: ``steps`` Hamiltonian trajectories of
    length :data:`HMC_LENGTH`, :func:`~pymc_dilation.engine.kernels.hmc_steps_vectorized`)
    and, with a ``proposal``, one independence jump
    (:func:`~pymc_dilation.engine.weights.independence_jump`). Both kernels leave the target
    invariant. Each particle has its own step size (``step``: a scalar or ``(n,)``), adapted
    during the first ``adapt_sweeps`` sweeps only (half of them by default), so after them
    every particle follows a fixed, exact Markov kernel; with ``hmc`` so is the diagonal
    mass, re-estimated from the particles and their gradients before each adapting sweep
    (:func:`~pymc_dilation.engine.metric.estimate_metric`'s diagonal). With ``converged``,
    the refinement stops after the first sweep past the adaptation for which
    ``converged(acceptance)`` (the particles' acceptance in that sweep) is true.

    MALA's moves are diffusive: on a 205-parameter hierarchy 10 sweeps of 4 steps left the
    particles 9 posterior sds off (60 sweeps: 2); trajectories of the same gradients move
    about as far as their length (worst error 0.19 sd).
    """
    inv_mass = np.ones(ys.shape[1]) if inv_mass is None else inv_mass
    log_eps = np.log(np.broadcast_to(np.asarray(step, dtype=float), (len(ys),))).copy()
    n_grad = 0
    adapt_sweeps = sweeps // 2 if adapt_sweeps is None else adapt_sweeps
    for sweep in range(sweeps):
        eps = np.exp(log_eps)
        adapting = sweep < adapt_sweeps
        if hmc:
            if adapting and len(ys) > 2:
                # nutpie's diagonal from draws and gradients, (Var x / Var g)^(1/2): exact for
                # a Gaussian, and informative before the particles have spread to the posterior
                inv_mass = estimate_metric(ys, grads, max_rank=0).scale ** 2
            n_leapfrog = int(np.clip(np.ceil(HMC_LENGTH / np.median(eps)), 1, HMC_MAX_LEAPFROG))
            runs = [
                hmc_steps_vectorized(
                    target.logp_grad_batch, ys, lps, grads, eps, n_leapfrog, rng, inv_mass
                )
                for _ in range(steps)
            ]
            info = LangevinInfo(
                np.mean([run.acceptance_rate for run in runs], axis=0),
                np.sum([run.divergences for run in runs], axis=0),
                n_leapfrog * steps,
            )
            n_grad += n_leapfrog * steps
            aim = HMC_TARGET_ACCEPT
        else:
            info = target.langevin(ys, lps, grads, eps, inv_mass, steps, rng, True)
            n_grad += steps
            aim = target_accept
        if adapting:
            log_eps += 2.0 * (info.acceptance_rate - aim) / np.sqrt(sweep + 1)
        jump = np.nan
        if proposal is not None:
            jump = independence_jump(target.logp_grad_batch, proposal, ys, lps, grads, rng)
            n_grad += 1
        if record is not None:
            record(1.0, eps, info, jump)
        if on_sweep is not None:
            on_sweep(sweep)
        if converged is not None and not adapting and converged(info.acceptance_rate):
            break
    return n_grad


@dataclass
class MappedPopulation:
    """A population explored, mapped and weighed: what the exact stages start from.

    Attributes
    ----------
    modes : ModeMap
        The modes the annealed particles reached.
    estimate : WeightEstimate
        Importance-sampling mode weights and log evidence.
    start, lps, grads : numpy.ndarray
        ``(n, d)`` starting particles with their log densities and gradients: the importance
        draws resampled by their weights, or the annealed particles when the importance
        effective sample size is below :data:`MIN_RESAMPLE_ESS`.
    resampled : bool
        Whether ``start`` holds resampled importance draws.
    local : LaplaceApproximation
        The Gaussian whose whitening suits every mode: zero mean, the modes' covariances
        averaged by their weights (the starting particles' robust covariance when they were
        not resampled).
    jumps : MixtureProposal
        The jump proposal: the modes' local Gaussians, weighted by the estimated weights with
        a floor of :data:`JUMP_FLOOR`.
    n_grad : int
        Gradient evaluations per particle so far.
    probed : bool
        Whether the map came from the probe's ascents (and its check) alone, with no
        population annealed (see :func:`map_growing_population`): the modes' Gaussians then
        describe the spread of the centers about each optimum (a safe importance proposal),
        not the posterior's.
    tempered : TemperedPopulation, optional
        The bridge from the map's mixture to the target, when the particles came from it
        (:func:`_tempered`).
    """

    modes: ModeMap
    estimate: WeightEstimate
    start: np.ndarray
    lps: np.ndarray
    grads: np.ndarray
    resampled: bool
    local: LaplaceApproximation
    jumps: MixtureProposal
    n_grad: int
    probed: bool = False
    tempered: TemperedPopulation | None = None


def map_population(
    target: PopulationTarget,
    centers: np.ndarray,
    levels: np.ndarray,
    rng: np.random.Generator,
    steps_per_level: int = 4,
    target_accept: float = 0.6,
    anneal_metropolis: bool = True,
    initial_step: float = 0.1,
    record: Callable | None = None,
    progress: Callable[[int], None] | None = None,
) -> MappedPopulation:
    """Explore, map and weigh: the first three stages (see the module docstring).

    Where the annealed particles found :data:`SPREAD_MIN_MODES` modes or more, centers drawn
    over the modes' spread climb too, as many as the particles at first (see
    :func:`_climb_from_spread`).

    Parameters are those of :func:`run_population`; ``record`` is called after each level as
    ``record(lam, eps, info, jump)``.
    """
    state = anneal(
        target, centers, levels, rng, steps_per_level, target_accept, anneal_metropolis,
        initial_step, record, progress,
    )  # fmt: skip
    state = _folded_state(target, state)
    modes = map_modes(target.logp_grad_batch, state.ys, state.lps, state.grads, fold=target.fold)
    n = len(state.ys)
    modes, more = _climb_from_spread(target, modes, rng, n)
    mapped = _weigh(target, state, modes, rng)
    return replace(mapped, n_grad=mapped.n_grad + -(-more // n))


def fold_points(fold, logp_grad, ys, lps, grads):
    """``(ys, lps, grads)`` with the points moved by ``fold`` (unchanged when it is None), the
    log densities and gradients evaluated again where a point moved."""
    if fold is None:
        return ys, lps, grads
    folded = np.ascontiguousarray(fold(ys))
    moved = ~np.all(np.isclose(folded, ys, rtol=1e-9, atol=1e-9), axis=1)
    if not moved.any():
        return ys, lps, grads
    lps, grads = np.array(lps, dtype=float), np.array(grads, dtype=float)
    with np.errstate(all="ignore"):
        new_lps, new_grads = logp_grad(folded[moved])
    lps[moved] = np.where(np.isfinite(new_lps), new_lps, -np.inf)
    grads[moved] = np.where(np.isfinite(new_grads), new_grads, 0.0)
    return folded, lps, grads


def _folded_state(target: PopulationTarget, state: AnnealState) -> AnnealState:
    """The annealed particles folded by the target's symmetry (see
    :attr:`PopulationTarget.fold`)."""
    ys, lps, grads = target.folded(state.ys, state.lps, state.grads)
    return state._replace(ys=ys, lps=lps, grads=grads)


def map_growing_population(
    target: PopulationTarget,
    draw_centers: Callable[[int], np.ndarray],
    levels: np.ndarray,
    rng: np.random.Generator,
    first: int,
    most: int,
    steps_per_level: int = 4,
    target_accept: float = 0.6,
    anneal_metropolis: bool = True,
    initial_step: float = 0.1,
    diffusion_sweeps: int = 0,
    probe: bool = False,
    known: ModeMap | None = None,
    climb_more: bool = True,
) -> MappedPopulation:
    """:func:`map_population` with a population that grows while it finds new modes.

    ``first`` particles are annealed and mapped; if they found one mode (of estimated weight
    at least :data:`GROWTH_WEIGHT`; modes of less are kept but not counted), that is the map.
    Otherwise the population doubles (new particles from ``draw_centers(n)``, all annealed
    particles mapped together) for as long as each doubling finds more such modes, up to
    ``most`` particles. A unimodal posterior so pays for ``first`` particles only, and a
    posterior with many modes gets the particles it needs to find them. With
    ``diffusion_sweeps``, the mapped particles then diffuse by that many MALA sweeps and the
    modes they reach are added (see :func:`_diffuse`).

    With ``probe``, the first ``first`` centers climb straight to their optima before any
    annealing (see :func:`_probe`); when they find one mode, with weights even enough to
    trust, :data:`CHECK_PARTICLES` particles are annealed and climb from where they end (see
    :func:`_check_from_annealed_starts`; from :data:`CHECK_MIN_DIM` dimensions on); when
    those find no other mode either, that is the map and nothing more is annealed or
    diffused. When they find several,
    more centers climb, the batch doubling while it finds modes of mass (see
    :func:`_climb_more`, up to ``most`` centers in all), and the modes they found join the
    annealed population's map.

    ``known`` holds optima already polished (the Laplace approximation the target was
    whitened by; see :func:`~pymc_dilation.engine.modes.map_modes`). Where the map then holds
    :data:`SPREAD_MIN_MODES` modes or more, ``most`` centers drawn over their spread climb
    too, more while they find modes (:func:`_climb_from_spread`). Without ``climb_more``
    no more centers climb after the probe, nor from the spread (where the modes are
    combinations of independent factors' modes, each factor mapped on its own: climbing to
    more combinations only enumerates them, 3 of a chain's 3.9 s on twelve double wells).
    """
    states: list[AnnealState] = []
    found_before = 0
    batch = first
    earlier_maps = 0  # gradient evaluations of the maps that more particles replaced
    climbed: ModeMap | None = None
    reliable_before = False
    centers = draw_centers(batch)
    if probe:
        probed, settled, checked = _probe_and_check(
            target, centers, draw_centers, levels, rng, steps_per_level, target_accept,
            anneal_metropolis, initial_step, known,
        )  # fmt: skip
        if settled:
            return probed
        earlier_maps = probed.n_grad * batch + checked
        if climb_more:
            climbed, more = _climb_more(target, probed.modes, draw_centers, batch, most)
            earlier_maps += more
    while True:
        target.stage(f"annealing {batch} particles along the dilation path ({len(levels)} levels)")
        states.append(
            anneal(
                target,
                draw_centers(batch) if states else centers,
                levels,
                rng,
                steps_per_level,
                target_accept,
                anneal_metropolis,
                initial_step,
            )  # fmt: skip
        )
        state = _folded_state(target, _concatenate(states))
        target.stage(f"climbing from {len(state.ys)} annealed particles to their optima")
        modes = map_modes(
            target.logp_grad_batch, state.ys, state.lps, state.grads, fold=target.fold,
            known=known,
        )  # fmt: skip
        total = len(state.ys)
        mapped = _weigh(target, state, modes, rng)
        # Stop at the size limit, when a doubling's particles reached no more modes of weight,
        # or when the modes' Gaussians have never described the particles:
        # - only modes the particles reached count, not those the importance draws added
        #   (twelve modes on a circle: 32 particles reached 9, discovery added 2, and the
        #   doubling, reaching those 11, stopped short of the twelfth);
        # - a map that was never reliable (importance weights too uneven) is of ascents that
        #   stopped short, and more particles only find more of them (a 55-parameter factor
        #   model: 17-22 of them and 530 000 gradients per chain at 1024 particles); one that
        #   was reliable and is not after a doubling has found modes its draws do not
        #   describe yet (a 4-component NormalMixture: 28 modes, ESS 126, then 43, ESS 8), so
        #   the population grows on and is judged by its last map.
        reached = mapped.modes.counts() > 0
        found = int(np.sum((mapped.estimate.weights >= GROWTH_WEIGHT) & reached))
        reliable_before = reliable_before or mapped.resampled
        if found <= max(found_before, 1) or total >= most or not reliable_before:
            break
        found_before = found
        earlier_maps += (modes.n_grad + 1) * total
        batch = min(total, most - total)
    if climbed is not None:
        mapped, more = _join_climbed(target, mapped, state, climbed, rng)
        earlier_maps += more
    if climb_more:
        spread, more = _climb_from_spread(target, mapped.modes, rng, most)
        earlier_maps += more
        if spread is not mapped.modes:
            mapped = _weigh(target, state, spread, rng)
            earlier_maps += total  # the first weighing's draws; these are counted in n_grad
    mapped = replace(mapped, n_grad=mapped.n_grad + -(-earlier_maps // total))
    return _finish(target, mapped, state, rng, target_accept, diffusion_sweeps)


def _probe_and_check(
    target, centers, draw_centers, levels, rng, steps_per_level, target_accept,
    anneal_metropolis, initial_step, known,
):  # fmt: skip
    """The probe's map from ``centers`` (:func:`_probe`) and, when it holds one mode, the
    check from annealed starts (:func:`_check_from_annealed_starts`, from
    :data:`CHECK_MIN_DIM` dimensions on). Returns the map (with the modes the check added),
    whether it settled on one mode (then ``probed`` is set and its ``n_grad`` counts the
    check), and the check's gradient evaluations, all its particles together."""
    probed, one_mode = _probe(target, centers, rng, known)
    if not one_mode:
        return probed, False, 0
    modes, checked = probed.modes, 0
    if target.dim >= CHECK_MIN_DIM:
        target.stage(f"annealing {CHECK_PARTICLES} particles to check the map from other starts")
        annealed = anneal(
            target, draw_centers(CHECK_PARTICLES), levels[::-4][::-1], rng, steps_per_level,
            target_accept, anneal_metropolis, initial_step,
        )  # fmt: skip
        modes, checked = _check_from_annealed_starts(target, modes, annealed)
    if modes is probed.modes:
        # No diffusion either: from draws of the one mode it found, a few MALA sweeps stay in
        # that mode (none added a mode on eight schools, garch, kidiq, sblrc: 2 seeds x 4
        # chains each), and cost 20 of the probe's ~50 gradients per particle; the chain's
        # own tuning looks further (DilationLangevin's map growth).
        n_grad = probed.n_grad + -(-checked // len(centers))
        return replace(probed, probed=True, n_grad=n_grad), True, checked
    return replace(probed, modes=modes), False, checked


def _evaluate(target: PopulationTarget, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log densities and gradients at the rows of ``xs``, a non-finite log density made
    ``-inf`` and a non-finite gradient zero (such a row climbs nowhere)."""
    with np.errstate(all="ignore"):
        lps, grads = target.logp_grad_batch(xs)
    return np.where(np.isfinite(lps), lps, -np.inf), np.where(np.isfinite(grads), grads, 0.0)


def _log_laplace_mass(modes: ModeMap) -> np.ndarray:
    """``log`` of each mode's Laplace mass ``π(peak) |det root|`` (unnormalised)."""
    return modes.logp + root_log_det(modes.roots)


def _laplace_shares(modes: ModeMap) -> np.ndarray:
    """Each mode's share of the map's Laplace mass."""
    log_mass = _log_laplace_mass(modes)
    share = np.exp(log_mass - log_mass.max())
    return share / share.sum()


def _added_mass(before: ModeMap, after: ModeMap) -> np.ndarray:
    """The shares of the Laplace mass of ``after`` held by the modes it added to ``before``
    (:func:`~pymc_dilation.engine.modes.add_modes` appends them)."""
    return _laplace_shares(after)[before.n_modes :]


def _check_from_annealed_starts(
    target: PopulationTarget, modes: ModeMap, annealed: AnnealState
) -> tuple[ModeMap, int]:
    """Climb from where the ``annealed`` particles ended (annealed along the dilation path
    from fresh centers) and add the modes they reach that ``modes`` lacks; returns ``modes``
    itself when they add none holding a share of at least :data:`GROWTH_WEIGHT` of the map's
    Laplace mass, and the gradient evaluations spent, the annealing's included (all
    particles together).

    An ascent ends in the basin its start lies in, and in high dimension the basins' shares
    of a broad law of centers go to 0 or 1 whatever the modes' masses: on two-mode Gaussian
    mixtures in 200-D (weights 0.18 and 0.25 for the smaller) the probe's 128 ascents all
    reached the heavier mode, and every chain sampled it alone. The annealed particles end
    elsewhere: those that reached the bulk ascend to the mode the probe found, but 3-6 of 32
    that the annealing left 1000-2500 nats below it ascend into the other basin. The
    annealing's Langevin noise carries them outwards, into the far field where the other
    mode's basin dominates (the ascents from the centers themselves all end in the first
    mode, after 20 iterations or 300). So this is a check from other starting points, not by
    mass (the annealing is too short to reach the posterior in high dimension): it finds such
    modes, not any mode.

    Only ascents that end within a budget of :data:`CHECK_ASCENT_ITER` rows per particle
    count. At 1005 parameters most annealed particles end thousands of nats below the optimum
    and are still climbing after 100 iterations; following each to its end (with a Newton
    polish where none had ended) cost 1.6 s of a chain's 4.4 s tuning and found nothing. But
    the ascents into a narrow mode, ill-conditioned in the whitening of the wide one, are
    slow too: on a 150-D two-mode mixture 4 of 32 ascents reached the narrow mode after
    60-150 iterations, while the other 28 ended in the wide one within 40; with every ascent
    cut at 40 iterations one chain in four missed the narrow mode (warned), with the budget
    shared none of 24 did.
    """
    state = _folded_state(target, annealed)
    ascent = ascend(
        target.logp_grad_batch, state.ys, state.lps, state.grads,
        n_iter=CHECK_ASCENT_MAX_ITER, max_rows=CHECK_ASCENT_ITER * len(state.ys),
    )  # fmt: skip
    spent = (state.n_grad + ascent.calls) * len(state.ys)
    ended = ~ascent.climbing & np.isfinite(ascent.lps)
    if not ended.any():
        return modes, spent
    points, lps, grads = target.folded(
        ascent.points[ended], *_evaluate(target, ascent.points[ended])
    )
    grown, calls = add_modes(target.logp_grad_batch, modes, points, lps, grads, fold=target.fold)
    spent += (calls + 1) * len(points)
    if grown is modes or not np.any(_added_mass(modes, grown) >= GROWTH_WEIGHT):
        return modes, spent
    return grown, spent


def _climb_more(
    target: PopulationTarget,
    modes: ModeMap,
    draw_centers: Callable[[int], np.ndarray],
    first: int,
    most: int,
) -> tuple[ModeMap, int]:
    """Climb from more centers while they find modes of mass; returns the map and the
    gradient evaluations spent (all centers together).

    Batches of new centers (as many as climbed before, so the count doubles, up to ``most``
    in all) climb to their optima, and the modes ``modes`` lacks join it (see
    :func:`~pymc_dilation.engine.modes.add_modes`); it stops after a batch that added no
    mode holding a share of at least :data:`GROWTH_WEIGHT` of the map's Laplace mass.

    A center reaches a mode by gradient ascent with the probability that its basin holds
    under the centers' law, which annealing along the dilation path does not change (the
    path keeps the basins' shapes); an ascent costs 5-20 gradients, an annealed path about
    80. Measured on a 2-D mixture of 40 components (rand2d-8): a mode of posterior weight
    0.127 is reached from 2 % of prior draws, and a chain whose 128 + 256 annealed particles
    had missed it lacked it for the whole run.
    """
    return _climb_while_finding(
        target, modes, lambda _, n: draw_centers(n), first, most, first, "more centers"
    )


def _climb_while_finding(
    target: PopulationTarget,
    modes: ModeMap,
    draw: Callable[[ModeMap, int], np.ndarray],
    first: int,
    most: int,
    climbed: int,
    what: str,
    persist: bool = False,
    weight: float = GROWTH_WEIGHT,
    keep_light: bool = True,
) -> tuple[ModeMap, int]:
    """The loop of :func:`_climb_more` and :func:`_climb_from_spread`: batches of
    ``draw(modes, n)`` centers (the map so far, the batch's size) climb and the modes the map
    lacks join it; the batch is ``first``, then as many as have climbed (``climbed`` before
    the first batch), up to ``most`` in all, and the loop stops after a batch that added no
    mode holding ``weight`` of the map's Laplace mass — with ``persist``, only while no batch
    has added one: once one has, every batch up to ``most`` climbs. Without ``keep_light``
    the modes of less than ``weight`` a batch adds are left out. Returns the map and the
    gradient evaluations spent (all centers together)."""
    spent, total, found = 0, climbed, False
    while total < most:
        batch = min(max(total, first), most - total)
        target.stage(f"climbing from {batch} {what} ({modes.n_modes} modes so far)")
        centers = draw(modes, batch)
        centers, lps, grads = target.folded(centers, *_evaluate(target, centers))
        grown, calls = add_modes(
            target.logp_grad_batch, modes, centers, lps, grads, fold=target.fold
        )
        spent += (calls + 1) * batch
        total += batch
        added = _added_mass(modes, grown) if grown is not modes else np.zeros(0)
        if not keep_light:
            # a batch of light finds only leaves the map itself (no weighing again)
            heavy = added >= weight
            grown = _first_modes(grown, modes.n_modes, heavy) if heavy.any() else modes
        modes = grown
        if np.any(added >= weight):
            found = True
        elif not (persist and found):
            break
    return modes, spent


SPREAD_MIN_MODES = 3
"""Modes of mass a map must hold before centers are drawn from their spread (see
:func:`_climb_from_spread`): fewer give no spread to measure in more than one direction."""
SPREAD_MOST = 4
"""Centers drawn over the modes' spread, at most, in multiples of the first batch."""
SPREAD_WEIGHT = 0.01
"""Laplace share of the map's mass a mode the spread climbs add must hold to join the map, and
for them to go on: on 2-D mixtures of 30-50 modes the first batch adds modes of
0.0001-0.0076 and the next ones nothing, at 0.06-0.15 s each, and the lightest spoilt the
weighing (rand2d-11: 22 modes → 31, importance weights no longer trusted, the bridge ran:
0.53 → 1.54 s, 278 divergences); on 10-D mixtures they add modes of 0.02-0.24."""
SPREAD_PERSIST = True
"""Once a batch of centers drawn over the spread has found a mode, every batch up to
:data:`SPREAD_MOST` climbs (see :func:`_climb_while_finding`)."""


def _spread_centers(modes: ModeMap, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` centers from a Gaussian at the mean of the map's modes of mass with, in every
    direction, their mean squared spread about it (per coordinate)."""
    heavy = modes.locations[_laplace_shares(modes) >= GROWTH_WEIGHT]
    mean = heavy.mean(axis=0)
    spread = np.sum((heavy - mean) ** 2) / ((len(heavy) - 1) * modes.locations.shape[1])
    return mean + np.sqrt(spread) * rng.standard_normal((n, len(mean)))


def _climb_from_spread(
    target: PopulationTarget, modes: ModeMap, rng: np.random.Generator, first: int
) -> tuple[ModeMap, int]:
    """Climb from centers drawn over the spread of the modes found while they find modes of
    mass; returns the map and the gradient evaluations spent (all centers together).

    For maps of :data:`SPREAD_MIN_MODES` modes of mass or more. ``first`` centers are drawn
    from a Gaussian at the mean of those modes with their spread about it in every direction
    (:func:`_spread_centers`, drawn again from the grown map each time), climb, and the
    modes the map lacks join it (:func:`~pymc_dilation.engine.modes.add_modes`); the batch
    doubles, up to :data:`SPREAD_MOST` times ``first`` centers in all, for as long as each
    batch adds a mode holding :data:`SPREAD_WEIGHT` of the map's Laplace mass, and once one
    has, to that budget (:data:`SPREAD_PERSIST`: about 1 center in 1000 reaches such a mode,
    so one batch that finds none says little once another found one).

    A mode that is narrower than its neighbours has a small basin, and the broad laws that
    centers come from (the prior, the dilation path's annealing) all but never start in it:
    its tail falls off faster than theirs, so every ascent from afar ends in a wider mode. On
    10-D mixtures of 5-8 components (widths 0.5-2, about 12 apart, 15-25 from the prior's
    mean) the annealed population of 2000 missed 0.11-0.63 of the posterior mass, the
    heaviest component (0.55) included on one, and ``pm.sample_smc`` as much (mode weights
    0.31-0.66 off in total variation); 0 of 4000 prior draws start in such a basin, about 1
    in 1000 centers drawn over the found modes' spread do, and with the doubling batches
    every missed component was found on five targets of six (0.06-0.09 missed on the sixth).
    """
    if np.sum(_laplace_shares(modes) >= GROWTH_WEIGHT) < SPREAD_MIN_MODES:
        return modes, 0
    return _climb_while_finding(
        target, modes, lambda found, n: _spread_centers(found, rng, n), first,
        SPREAD_MOST * first, 0, "centers spread over the modes", persist=SPREAD_PERSIST,
        weight=SPREAD_WEIGHT, keep_light=False,
    )  # fmt: skip


def _first_modes(modes: ModeMap, n: int, added: np.ndarray) -> ModeMap:
    """``modes`` with its first ``n`` modes and those after them where ``added`` is True (the
    labels, of the first ``n``, are kept)."""
    keep = np.concatenate([np.ones(n, dtype=bool), added])
    if keep.all():
        return modes
    return replace(
        modes, locations=modes.locations[keep], means=modes.means[keep],
        roots=modes.roots[keep], logp=modes.logp[keep],
    )  # fmt: skip


def _join_climbed(target, mapped: MappedPopulation, state: AnnealState, climbed: ModeMap, rng):
    """``mapped`` with the modes of ``climbed`` (see :func:`_climb_more`) it lacks, weighed
    again when there are any; returns it and the gradient evaluations spent."""
    lps, grads = _evaluate(target, climbed.locations)
    modes, calls = add_modes(
        target.logp_grad_batch, mapped.modes, climbed.locations, lps, grads, fold=target.fold
    )
    spent = (calls + 1) * climbed.n_modes
    if modes is mapped.modes:
        return mapped, spent
    # Weighed again: the first weighing's draws are counted in n_grad, these are spent.
    return _weigh(target, state, modes, rng), spent + len(state.ys)


def _finish(target, mapped: MappedPopulation, state: AnnealState, rng, target_accept, sweeps):
    """The diffusion sweeps of :func:`map_growing_population`, when asked for."""
    if not (sweeps and mapped.resampled):
        return mapped
    diffused, more = _diffuse(target, mapped, state, rng, target_accept, sweeps)
    return replace(diffused, n_grad=mapped.n_grad + more)


def _probe_step(target: PopulationTarget) -> np.ndarray:
    """A MALA step size for whitened coordinates (unit posterior sd): ``d^(-1/3)``."""
    return np.full(1, min(1.0, target.dim ** (-1.0 / 3.0)))


def _probe(
    target: PopulationTarget, centers: np.ndarray, rng, known: ModeMap | None = None
) -> tuple[MappedPopulation, bool]:
    """Map by climbing from ``centers`` directly, without annealing. Returns the map and
    whether it holds one mode of weight at least :data:`GROWTH_WEIGHT`, with importance
    weights even enough to resample or with no other mode in the map.

    Annealing from a center moves a particle much as a noisy ascent from it would: the basin
    it ends in is mostly the one the center lies in. On a unimodal posterior every ascent
    ends on the one optimum, and the annealing (80 steps per particle) only repeats that;
    where the ascents find a second mode, the annealed population runs as before.
    """
    target.stage(f"climbing from {len(centers)} centers to their optima")
    centers, lps, grads = target.folded(centers, *_evaluate(target, centers))
    modes = map_modes(target.logp_grad_batch, centers, lps, grads, fold=target.fold, known=known)
    state = AnnealState(centers, lps, grads, _probe_step(target), 1)
    mapped = _weigh(target, state, modes, rng)
    heavy = int(np.sum(mapped.estimate.weights >= GROWTH_WEIGHT))
    # One mode is found when one holds the weight and either the importance weights are even
    # enough to resample, or the map holds no other mode of mass after the heavy importance
    # draws climbed (weigh_and_discover): they found none. In high dimension one importance
    # step is degenerate even for the right map (radon, 175 parameters: ESS 1 with every
    # ascent on one optimum), and annealing then cost 3-4 s a chain and found nothing more.
    # Mass is the Laplace mass, as the check and the climbs count it: stochastic volatility's
    # ascents left a head 5000 nats below the optimum in one chain of two, which sent it to
    # the annealing and more climbs (1 of its 1.6 s).
    one = heavy == 1 and (
        mapped.resampled or int(np.sum(_laplace_shares(mapped.modes) >= GROWTH_WEIGHT)) == 1
    )
    return mapped, one


def _diffuse(target, mapped: MappedPopulation, state: AnnealState, rng, target_accept, sweeps):
    """Let the mapped particles diffuse by MALA sweeps (no jumps) and add the modes they reach
    that the map lacks (particles beyond every mode's Gaussian, past its 1 - 1e-4 Mahalanobis
    quantile, climb to their modes; the hill–valley test decides which are new).

    Exploration by annealed paths misses a mode whose basin held no path's end; Langevin steps
    from a neighbouring mode still reach it when the barrier between them is low, and a chain
    that did so after tuning would stay there, since no jump proposes it. Returns the
    (re-weighed) map and the gradient evaluations per particle spent.
    """
    ys, lps, grads = mapped.start.copy(), np.array(mapped.lps, float), mapped.grads.copy()
    target.stage(f"{sweeps} Langevin sweeps of {len(ys)} particles")
    n_grad = refine(
        target, ys, lps, grads, None, rng, float(np.median(state.step)), target_accept,
        sweeps, DIFFUSION_STEPS,
    )  # fmt: skip
    far = mapped.jumps.uncovered(ys)
    if not far.any():
        return mapped, n_grad
    modes, calls = add_modes(
        target.logp_grad_batch, mapped.modes, ys[far], lps[far], grads[far], fold=target.fold
    )
    n_grad += -(-calls * int(far.sum()) // len(ys))
    if modes is mapped.modes:
        return mapped, n_grad
    return _weigh(target, state, modes, rng), n_grad + 1


def _concatenate(states: list[AnnealState]) -> AnnealState:
    """The batches of annealed particles as one population (gradients counted per particle,
    averaged over the batches' sizes)."""
    if len(states) == 1:
        return states[0]
    sizes = np.array([len(s.ys) for s in states])
    return AnnealState(
        ys=np.concatenate([s.ys for s in states]),
        lps=np.concatenate([s.lps for s in states]),
        grads=np.concatenate([s.grads for s in states]),
        step=np.concatenate([s.step for s in states]),
        n_grad=int(round(np.average([s.n_grad for s in states], weights=sizes))),
    )


def _weigh(
    target, state: AnnealState, modes: ModeMap, rng, n: int | None = None
) -> MappedPopulation:
    """Importance weights from the map's Gaussians (with the discovery of
    :func:`weigh_and_discover`), and the particles to start from: ``n`` importance draws
    resampled (``len(state.ys)`` by default), or ``state``'s particles when the importance
    weights are too uneven to resample."""
    n = len(state.ys) if n is None else n
    n_draws = max(n, DRAWS_PER_MODE * modes.n_modes)
    target.stage(f"weighing {modes.n_modes} mode(s) by importance sampling ({n_draws} draws)")
    modes, estimate, draws, calls = weigh_and_discover(
        target.logp_grad_batch, modes, modes.counts(), n_draws, rng, target.fold
    )
    # per particle started from: the annealing and the ascents were spent on state's
    spent = (state.n_grad + modes.n_grad) * len(state.ys) + n_draws + calls
    # Whiten by the modes' covariance averaged by their weights: the initial whitening came
    # from the mode nearest the initial point, which may be none of the posterior's main modes
    # (measured on a label-switching mixture: MALA acceptance 0). When the importance weights
    # are too uneven to trust, neither the weights nor the resampled draws are used: the
    # annealed particles and their own covariance are.
    resampled = estimate.ess >= MIN_RESAMPLE_ESS * n_draws
    if resampled:
        keep = systematic_resample(estimate.log_importance_weights, n, rng)
        start, lps, grads = draws.xs[keep], draws.lps[keep], draws.grads[keep]
        local = _average_mode_gaussian(modes.roots, estimate.weights)
    else:
        start, lps, grads = state.ys, state.lps, state.grads
        local = _average_mode_gaussian(_robust_root(start)[None], np.ones(1))
    return MappedPopulation(
        modes=modes,
        estimate=estimate,
        start=start,
        lps=lps,
        grads=grads,
        resampled=bool(resampled),
        local=local,
        jumps=mode_proposal(modes, estimate.weights, JUMP_FLOOR),
        n_grad=-(-spent // n),
    )


def weigh_and_discover(
    logp_grad: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    modes: ModeMap,
    shares: np.ndarray,
    n: int,
    rng: np.random.Generator,
    fold: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[ModeMap, WeightEstimate, object, int]:
    """Weigh ``modes`` by importance sampling, and look for what their Gaussians miss.

    ``n`` draws from the mixture of the modes' Gaussians (in proportion to ``shares``, with
    :data:`PROPOSAL_FLOOR` spread evenly) estimate the modes' weights. The heaviest draws
    (see :func:`_heavy_draws`) climb to their modes. New ones join the map, and a known mode
    whose Gaussian misses the optimum they reached (a mode of two overlapping bumps) is
    widened to cover it (see :func:`~pymc_dilation.engine.modes.add_modes`). When they reach
    no optimum the map lacks and the importance ESS is below :data:`DISCOVERY_ESS` of the
    draws, the modes holding them are widened to their importance-weighted moments
    (:func:`_widen_to_draws`, when the ESS is at least :data:`WIDEN_MIN_ESS`); with even
    enough weights a few heavy draws in a mode's tails (a curved or skewed mode) are no
    reason to widen it (measured: a banana's refinement then mixed worse). The modes are then
    weighed again (new modes get an even share of the proposal), at most
    :data:`DISCOVERY_ROUNDS` times.

    With ``fold`` (see :attr:`PopulationTarget.fold`) the heavy draws are folded before they
    climb, so that the copies of the modes under a symmetry do not join the map.

    Returns the modes, the last estimate, its draws and the log density evaluations spent
    beyond the first ``n`` draws.
    """
    shares = np.asarray(shares, dtype=float)
    spent = 0
    for round_ in range(DISCOVERY_ROUNDS + 1):
        estimate, draws = estimate_weights(
            logp_grad, mode_proposal(modes, shares, PROPOSAL_FLOOR), n, rng
        )
        spent += n if round_ else 0
        heavy = _heavy_draws(estimate, n)
        if round_ == DISCOVERY_ROUNDS or heavy.size == 0:
            break
        climbers = fold_points(
            fold, logp_grad, draws.xs[heavy], draws.lps[heavy], draws.grads[heavy]
        )
        grown, calls = add_modes(logp_grad, modes, *climbers, widen=True, fold=fold)
        spent += calls * len(heavy)
        if grown is modes and WIDEN_MIN_ESS <= estimate.ess < DISCOVERY_ESS * n:
            grown = _widen_to_draws(modes, estimate, draws, heavy)
        if grown is modes:
            break
        added = grown.n_modes - modes.n_modes
        shares = np.append(shares / shares.sum(), np.full(added, 1.0 / grown.n_modes))
        modes = grown
    return modes, estimate, draws, spent


def _heavy_draws(estimate: WeightEstimate, n: int) -> np.ndarray:
    """Indices of the importance draws worth climbing from: the :data:`DISCOVERY_DRAWS`
    heaviest when the importance ESS is below :data:`DISCOVERY_ESS` of the ``n`` draws, and
    otherwise those (as many at most) whose weight exceeds :data:`UNDERVALUED` times the
    mean, where the proposal undervalues the posterior."""
    log_w = estimate.log_importance_weights
    finite = np.flatnonzero(np.isfinite(log_w))
    if finite.size == 0:
        return finite
    order = finite[np.argsort(log_w[finite])][-DISCOVERY_DRAWS:]
    if estimate.ess < DISCOVERY_ESS * n:
        return order
    top = log_w[finite].max()
    log_mean = top + np.log(np.mean(np.exp(log_w[finite] - top)))
    return order[log_w[order] > log_mean + np.log(UNDERVALUED)]


def _widen_to_draws(modes: ModeMap, estimate: WeightEstimate, draws, heavy) -> ModeMap:
    """``modes`` with the Gaussian of each mode holding one of the ``heavy`` draws widened to
    the 50/50 mixture of itself and the importance-weighted moments of the draws nearest that
    mode (the mode's own moments, as the importance sample estimates them).

    For heavy draws whose ascent only found known modes: the mode has mass its Gaussian
    misses without a second peak (a shoulder, a skewed flank), and the weighted moments
    describe it. The mixture keeps the Gaussian at least as wide as before.
    """
    proposal = mode_proposal(modes, np.ones(modes.n_modes), 1.0)
    nearest = proposal.nearest_mode(draws.xs)
    log_w = estimate.log_importance_weights
    means, roots = modes.means.copy(), modes.roots.copy()
    for k in np.unique(nearest[heavy]):
        own = (nearest == k) & np.isfinite(log_w)
        if own.sum() < 2:
            continue
        w = np.exp(log_w[own] - log_w[own].max())
        w /= w.sum()
        xs = draws.xs[own]
        mean = w @ xs
        centered = xs - mean
        cov = (w[:, None] * centered).T @ centered
        means[k], roots[k] = moment_match((means[k], roots[k] @ roots[k].T), (mean, cov), 0.5)
    return replace(modes, means=means, roots=roots)


def map_population_of(
    target: PopulationTarget,
    draw_centers: Callable[[int], np.ndarray],
    levels: np.ndarray,
    rng: np.random.Generator,
    draws: int,
    steps_per_level: int = 4,
    target_accept: float = 0.6,
    anneal_metropolis: bool = True,
    initial_step: float = 0.1,
    record: Callable | None = None,
    known: ModeMap | None = None,
    reliable: Callable[[np.ndarray], bool] | None = None,
) -> MappedPopulation:
    """A population of ``draws`` particles explored, mapped and weighed; annealed only where
    the posterior is not one mode.

    First :data:`FIRST_PARTICLES` centers climb straight to their optima, as the step
    method's tuning population does (:func:`_probe_and_check`: the probe, and its check from
    annealed starts from :data:`CHECK_MIN_DIM` dimensions on). When they find one
    mode, its map is weighed by ``draws`` importance draws (at least :data:`DRAWS_PER_MODE`
    per mode), which are resampled to start the refinement. Otherwise, or when the
    importance weights are too uneven to resample, or ``reliable(log_weights)`` says they
    cannot be trusted (a Pareto k̂ test), all ``draws`` particles are annealed along the
    dilation path and mapped (:func:`map_population`). Either way, importance weights whose
    ESS is below :data:`ADAPTED_ESS` of the draws move the map's Gaussians to the resampled
    draws' moments and are drawn again (:func:`_moved_to_draws`); weights still not trusted
    are replaced by the bridge from the map's mixture to the target (:func:`_tempered`,
    which then starts the refinement).

    Measured: annealing every particle cost 80 gradient evaluations a particle where the
    ascents settle the map (the label-switching mixtures, folded: 2.3-2.5 of
    ``pm.sample_smc``'s wall before, 0.56-0.79 now). Where they find several modes a
    growing annealed population (128, doubling while it finds more, as the step method's)
    missed modes that all 2000 annealed particles found: on held-out 10-D mixtures
    (rand10d-5, seeds 5 and 6) mode weights off by 0.64 in total variation against 0.05, so
    the population anneals in full there. Neal's funnel's neck Gaussian gave weights even
    enough to resample (k̂ 0.95), and refined from there the particles passed the
    convergence checks that catch the annealed ones.

    The bridge replaced, where the ascents settle one mode, the annealing of every particle,
    and where they do not, the refinement of annealed particles with uncorrected weights
    (warm, PyMC 6.4, one seed, errors in posterior sds): centered radon 17.5 → 0.09 (12.3 →
    8.9 s), a factor model 13.5 → 0.02, a 5-component label-switching mixture 18.2 →
    0.02-0.05, a 205-parameter hierarchy 0.31 → 0.07 (7.4 → 11-13 s), a 45-parameter one
    1.15 → 0.06.
    """
    centers = draw_centers(min(FIRST_PARTICLES, draws))
    mapped, settled, checked = _probe_and_check(
        target, centers, draw_centers, levels, rng, steps_per_level, target_accept,
        anneal_metropolis, initial_step, known,
    )  # fmt: skip
    spent = mapped.n_grad * len(centers) + (0 if settled else checked)
    if settled and mapped.resampled:
        mapped = _moved_while_uneven(
            target, _weighed_again(target, mapped, mapped.modes, rng, draws), rng, draws
        )
        if _trusted(mapped, reliable):
            return mapped
        spent = mapped.n_grad * len(mapped.start)
    if settled:
        return _tempered(target, mapped, rng, draws, spent)
    mapped = map_population(
        target, draw_centers(draws), levels, rng, steps_per_level, target_accept,
        anneal_metropolis, initial_step, record,
    )  # fmt: skip
    mapped = _moved_while_uneven(target, mapped, rng, draws)
    if not _trusted(mapped, reliable):
        return _tempered(target, mapped, rng, draws, spent + mapped.n_grad * draws)
    return replace(mapped, n_grad=mapped.n_grad + -(-spent // draws))


def _trusted(mapped: MappedPopulation, reliable: Callable[[np.ndarray], bool] | None) -> bool:
    """Whether ``mapped``'s importance draws were resampled and ``reliable`` trusts their
    weights."""
    return mapped.resampled and (
        reliable is None or reliable(mapped.estimate.log_importance_weights)
    )


def _tempered(target, mapped: MappedPopulation, rng, draws: int, spent: int) -> MappedPopulation:
    """``mapped`` with its particles, weights and evidence from bridges from its mixture to
    the target (:func:`~pymc_dilation.engine.tempering.temper`), and its modes' Gaussians
    set to the tempered particles' moments; ``spent`` gradient evaluations (all particles
    together) came before.

    Each bridge after the first starts from the Gaussians at the moments of the previous
    one's particles (a population Monte Carlo step), until two successive ones agree on
    ``log Z`` within :data:`BRIDGE_AGREEMENT` or :data:`BRIDGE_PASSES` have run. The first
    one, from the map, is a pilot of :data:`PILOT_SHARE` of the particles (see there). A bridge
    from Gaussians much narrower than the posterior along a slow direction lags behind its
    levels there, and no level's weights show it (they can only reweigh particles where they
    are). Measured with one bridge (2000 particles, seed 1): stochastic volatility (250
    returns) 0.42 sd off and log Z 16 nats below the later bridges', a latent GP's
    hyperparameters' sds 10-20 % short over seeds 1-4 (the bridge alone left the length
    scale's mean 0.67 sd low), log Z of the centered radon model 2.4 nats lower.
    """
    passes: list[TemperedPopulation] = []
    pilot = min(draws, max(PILOT_MIN, int(PILOT_SHARE * draws)))
    for i in range(BRIDGE_PASSES):
        n = pilot if i == 0 and BRIDGE_PASSES > 1 else draws
        mapped = _bridged(target, mapped, rng, n)
        # gradient evaluations per particle of the final population
        passes.append(replace(mapped.tempered, n_grad=-(-mapped.tempered.n_grad * n // draws)))
        if evidence_change([p.log_evidence for p in passes]) <= BRIDGE_AGREEMENT:
            break
    bridge = joined_passes(passes)
    return replace(mapped, tempered=bridge, n_grad=-(-spent // draws) + bridge.n_grad)


def _bridged(target, mapped: MappedPopulation, rng, draws: int) -> MappedPopulation:
    """One bridge from ``mapped``'s mixture (see :func:`_tempered`)."""
    modes = mapped.modes
    # No defensive part: in high dimension the widened Gaussians' shell makes the bridge's
    # middle levels bimodal (measured at d = 200: log Z 2-12 nats low on 3 seeds of 4, within
    # 0.35 without it); the bridge's moves, not the proposal, reach the tails.
    proposal = mode_proposal(modes, mapped.estimate.weights, PROPOSAL_FLOOR, defensive=0.0)
    # In coordinates that whiten the modes' Gaussians (one mode: q is then the standard
    # Gaussian, which costs no matrix product; a 205-parameter hierarchy spent 3.2 of its
    # bridge's 11 s on q's density in the model's coordinates).
    frame = _bridge_frame(modes, mapped.estimate.weights)
    if modes.n_modes == 1:  # exactly the standard Gaussian (a solve would leave round-off)
        start = MixtureProposal(
            np.zeros((1, target.dim)), np.eye(target.dim)[None], np.ones(1), 0.0
        )
    else:
        start = proposal.in_coordinates(frame)
    bridge = temper(target.whitened(frame).logp_grad_batch, start, draws, rng, report=target.report)
    bridge = replace(
        bridge,
        xs=frame.to_density(bridge.xs),
        grads=np.linalg.solve(frame.root.T, bridge.grads.T).T,
        log_evidence=bridge.log_evidence + float(root_log_det(frame.root)),
    )
    xs, lps, grads = target.folded(bridge.xs, bridge.lps, bridge.grads)
    labels = proposal.nearest_mode(xs)
    shares = np.bincount(labels, minlength=mapped.modes.n_modes) / draws
    # The particles are correlated through resampling; half of them is a cautious count.
    ess = max(float(bridge.ess[-1]) * draws, 1.0)
    estimate = WeightEstimate(
        weights=shares,
        weights_se=np.sqrt(shares * (1.0 - shares) / (0.5 * draws)),
        log_evidence=bridge.log_evidence,
        log_evidence_se=bridge.log_evidence_se,
        log_importance_weights=bridge.log_increments,
        ess=ess,
    )
    tempered = replace(
        mapped, estimate=estimate, start=xs, lps=lps, grads=grads, resampled=True,
        jumps=mode_proposal(mapped.modes, shares, JUMP_FLOOR), tempered=bridge,
    )  # fmt: skip
    modes = _moved_to_draws(tempered)
    return replace(
        tempered,
        modes=modes,
        local=_average_mode_gaussian(modes.roots, np.maximum(shares, 1e-12)),
        jumps=mode_proposal(modes, shares, JUMP_FLOOR),
    )


def _moved_while_uneven(target, mapped: MappedPopulation, rng, draws: int) -> MappedPopulation:
    """``mapped`` with its Gaussians moved to the resampled draws' moments and weighed again
    while the importance ESS is below :data:`ADAPTED_ESS` of the draws, at most
    :data:`ADAPT_ROUNDS` times."""
    for _ in range(ADAPT_ROUNDS):
        if not mapped.resampled or mapped.estimate.ess >= ADAPTED_ESS * len(mapped.start):
            break
        mapped = _weighed_again(target, mapped, _moved_to_draws(mapped), rng, draws)
    return mapped


def _weighed_again(target, mapped: MappedPopulation, modes: ModeMap, rng, draws: int):
    """``mapped`` with ``modes`` weighed by ``draws`` importance draws (its particles the
    fallback, its gradient evaluations carried over)."""
    state = AnnealState(mapped.start, mapped.lps, mapped.grads, np.ones(1), mapped.n_grad)
    weighed = _weigh(target, state, replace(modes, n_grad=0), rng, n=draws)
    return replace(weighed, probed=mapped.probed)


def _moved_to_draws(mapped: MappedPopulation) -> ModeMap:
    """The map with each mode's Gaussian set to the mean and covariance of the resampled
    importance draws nearest it (a population Monte Carlo step: the draws' law is the
    posterior's, as the importance weights estimate it); a mode with no more such draws than
    dimensions keeps its own."""
    modes = mapped.modes
    nearest = mapped.jumps.nearest_mode(mapped.start)
    means, roots = modes.means.copy(), modes.roots.copy()
    for k in range(modes.n_modes):
        own = mapped.start[nearest == k]
        if len(own) > modes.means.shape[1]:
            means[k] = own.mean(axis=0)
            roots[k] = shrunk_root(np.atleast_2d(np.cov(own.T)), dense=True)
    return replace(modes, means=means, roots=roots)


def run_population(
    target: PopulationTarget,
    draw_centers: Callable[[int], np.ndarray],
    levels: np.ndarray,
    rng: np.random.Generator,
    draws: int,
    steps_per_level: int = 4,
    target_accept: float = 0.6,
    anneal_metropolis: bool = True,
    refine_sweeps: int = 10,
    refine_steps: int = 4,
    initial_step: float = 0.1,
    progress: Callable[[int], None] | None = None,
    known: ModeMap | None = None,
    reliable: Callable[[np.ndarray], bool] | None = None,
    find_factors: bool = True,
) -> PopulationResult:
    """Explore, map, weigh and refine one population (see the module docstring and
    :func:`map_population_of`).

    Parameters
    ----------
    target : PopulationTarget
    draw_centers : callable
        ``draw_centers(n)``: ``(n, d)`` dilation-path centers, one per particle (repeat a row
        for a shared center).
    levels : numpy.ndarray
        Validated λ schedule ending at 1.
    rng : numpy.random.Generator
    draws : int
        Particles.
    steps_per_level : int
        Langevin steps per particle and level.
    target_accept : float
        Target acceptance of the shared step size.
    anneal_metropolis : bool
        MALA (True) or unadjusted Langevin (False) during the annealing.
    refine_sweeps : int
        Refinement sweeps at λ = 1, each ``refine_steps`` MALA steps then one jump.
    refine_steps : int
        MALA steps per sweep.
    initial_step : float
        First step size.
    progress : callable, optional
        Called with the number of stages completed so far.
    known : ModeMap, optional
        Optima already polished (see :func:`~pymc_dilation.engine.modes.map_modes`).
    reliable : callable, optional
        ``reliable(log_importance_weights)``: whether resampled importance draws may start
        the refinement (see :func:`map_population_of`).
    find_factors : bool
        Look for independent factors with several modes each and run one population per
        factor (:func:`_run_factors`); False for a factor's own run.
    """
    groups = _factor_groups_of(target, draw_centers) if find_factors else None
    if groups is not None:
        return _run_factors(
            target, groups, draw_centers, levels, rng, draws, progress, known,
            dict(
                steps_per_level=steps_per_level, target_accept=target_accept,
                anneal_metropolis=anneal_metropolis, refine_sweeps=refine_sweeps,
                refine_steps=refine_steps, initial_step=initial_step, reliable=reliable,
            ),
        )  # fmt: skip
    stats: dict[str, list[float]] = {
        k: []
        for k in (
            "dilation", "inverse_temperature", "step_size", "acceptance_rate", "divergences",
            "jump_acceptance",
        )
    }  # fmt: skip

    def record(lam, eps, info, jump, beta=np.nan):
        stats["dilation"].append(lam)
        stats["inverse_temperature"].append(beta)
        stats["step_size"].append(float(np.median(eps)))
        stats["acceptance_rate"].append(float(info.acceptance_rate.mean()))
        before = stats["divergences"][-1] if stats["divergences"] else 0
        stats["divergences"].append(before + int(info.divergences.sum()))
        stats["jump_acceptance"].append(jump)

    mapped = map_population_of(
        target, draw_centers, levels, rng, draws, steps_per_level, target_accept,
        anneal_metropolis, initial_step, record, known, reliable,
    )  # fmt: skip
    if mapped.tempered is not None:
        _record_bridge(mapped.tempered, record)
    if progress is not None:
        progress(len(levels))
    modes, estimate, local = mapped.modes, mapped.estimate, mapped.local
    refined = target.whitened(local)
    us = local.to_whitened(mapped.start)
    # The map has no Jacobian term (the log density is the same in both coordinates); the
    # gradient follows by the chain rule, so nothing is evaluated again.
    grads = np.ascontiguousarray(mapped.grads @ local.root)
    lps = np.array(mapped.lps, dtype=float)
    jumps = mapped.jumps.in_coordinates(local)
    n_grad = mapped.n_grad
    n = len(us)
    start_us = us.copy()
    last: dict[str, object] = {}
    diverging = np.zeros(n, dtype=bool)

    def record_refine(lam, eps, info, jump):
        last.pop("checks", None)  # the particles moved: figures of the previous sweep are stale
        last["acceptance"] = info.acceptance_rate
        last["sweeps"] = last.get("sweeps", 0) + 1
        last["before"], last["now"] = last.get("now"), us.copy()
        diverging[:] |= np.asarray(info.divergences) > 0
        record(lam, eps, info, jump, 1.0)

    def converged(acceptance: np.ndarray) -> bool:
        last["checks"] = population_checks(start_us, us, grads, acceptance, last["before"])
        passed = not failed_checks(last["checks"], n, STOP_MARGIN)
        # the sweep just recorded; -1 until one passes (NaN, below, if none was tested)
        last["settled"] = float(last["sweeps"] - 1) if passed else -1.0
        return passed

    n_grad += refine(
        refined, us, lps, grads, jumps, rng, 0.5, target_accept, refine_sweeps, refine_steps,
        None, record_refine, lambda sweep: progress and progress(len(levels) + sweep + 1),
        # bridged particles lag along slow directions; resampled importance draws are
        # posterior draws already, which MALA only decorrelates (a 200-D regression: HMC 21 s,
        # MALA 12 s, same errors)
        hmc=mapped.tempered is not None,
        adapt_sweeps=min(REFINE_ADAPT_SWEEPS, refine_sweeps // 2),
        converged=converged if STOP_WHEN_CONVERGED else None,
    )  # fmt: skip
    if progress is not None:
        progress(len(levels) + refine_sweeps)
    checks = last.get("checks") or population_checks(
        start_us, us, grads, last.get("acceptance"), last.get("before")
    )
    checks["settled_sweep"] = last.get("settled", np.nan)
    bridged = mapped.tempered.log_evidences if mapped.tempered is not None else []
    checks["bridge_passes"] = float(len(bridged))
    checks["bridge_evidence_change"] = evidence_change(bridged)
    labels = jumps.nearest_mode(us)
    ys = local.to_density(us)
    checks["invalid_share"] = replace_invalid(ys, lps, labels, diverging, rng)
    return PopulationResult(
        samples=ys,
        logp=lps,
        labels=labels,
        diverging=diverging,
        modes=modes,
        estimate=estimate,
        stage_stats={k: np.asarray(v) for k, v in stats.items()},
        n_grad=int(n_grad),
        checks=checks,
    )


FACTOR_CENTERS = 32
"""Centers whose ascents tell which independent blocks have several modes (see
:func:`_factor_groups_of`)."""
FACTOR_ASCENT_ITER = 60
"""Iterations of those ascents, run to a tolerance of ``1e-8`` nats (about ``1e-4`` sd from
the optimum) so that two ascents to one mode end together."""


def _factor_groups_of(target: PopulationTarget, draw_centers) -> list[np.ndarray] | None:
    """The groups of coordinates to sample separately (:mod:`~pymc_dilation.engine.blocks`),
    or None: a density above :data:`~pymc_dilation.engine.blocks.BLOCKS_MAX_DIM` dimensions,
    whose coordinates are all linked, or whose independent blocks do not multiply modes.

    Factors take precedence over a fold by symmetries (:attr:`PopulationTarget.fold`): each
    factor's run sees all its modes, copies included. Folded instead, six symmetric double
    wells (64 copies of one mode) came out with log Z 2.0-3.3 nats off (seeds 1-3, warned)."""
    if not 2 <= target.dim <= BLOCKS_MAX_DIM:
        return None
    centers = draw_centers(FACTOR_CENTERS)
    with np.errstate(all="ignore"):
        lps, grads = target.logp_grad_batch(centers)
    finite = np.isfinite(lps) & np.all(np.isfinite(grads), axis=1)
    if finite.sum() < 8:
        return None
    centers, lps, grads = centers[finite], lps[finite], grads[finite]
    blocks = interaction_blocks(target.logp_grad_batch, centers[:4])
    if len(blocks) < 2:
        return None
    target.stage("looking for the density's independent factors")
    ascent = ascend(
        target.logp_grad_batch, centers, lps, grads, n_iter=FACTOR_ASCENT_ITER, tol=1e-8
    )
    settled = ascent.points[~ascent.climbing]  # unfinished ascents would look like modes
    return factor_groups(target.logp_grad_batch, blocks, centers, settled)


def map_factors(
    target: PopulationTarget, draw_centers, levels, rng, first: int, most: int, *settings
) -> list[tuple[np.ndarray, ModeMap, np.ndarray]] | None:
    """Each factor with several modes of a product density (:func:`_factor_groups_of`),
    mapped on its own by :func:`map_growing_population` (``settings`` are that function's
    arguments after ``most``), the other coordinates held at the origin:
    ``[(coordinates, modes, weights), ...]`` in ``target``'s coordinates, the weights even
    where the importance weights were not resampled; None when the density is no such
    product."""
    groups = _factor_groups_of(target, draw_centers)
    if groups is None:
        return None
    factors = []
    for group in groups:
        factor = PopulationTarget(
            dim=len(group),
            logp_grad_batch=restricted(target.logp_grad_batch, group, np.zeros(target.dim)),
            report=target.report,
        )
        mapped = map_growing_population(
            factor, lambda n, group=group: draw_centers(n)[:, group], levels, rng, first, most,
            *settings,
        )  # fmt: skip
        k = mapped.modes.n_modes
        if k > 1:
            weights = mapped.estimate.weights if mapped.resampled else np.full(k, 1.0 / k)
            factors.append((group, mapped.modes, weights))
    return factors or None


def _run_factors(
    target: PopulationTarget, groups, draw_centers, levels, rng, draws, progress, known,
    settings: dict,
) -> PopulationResult:  # fmt: skip
    """One population per group of coordinates, combined: the density is a product of the
    groups' factors (:mod:`~pymc_dilation.engine.blocks`), each run samples its factor with
    the other coordinates held at an anchor, and rows of the factors' particles, each
    factor's in a random order, are draws of the product.

    The mode map lists the combinations of the factors' modes that the particles visit
    (weights: the products of the factors' weights, which sum to less than 1 when some
    combinations went unvisited); ``log Z`` is the sum of the factors' evidences, each
    measured with the others at the anchor, less ``(B - 1) log π(anchor)``; the importance
    weights (for Pareto k̂) are the sums of the factors' log weights draw by draw, the
    weights of the product of their proposals; each convergence figure is the worst
    factor's.
    """
    anchor = np.zeros(target.dim)  # whitened coordinates: the start's optimum
    with np.errstate(all="ignore"):
        anchor_lp = float(target.logp_grad_batch(anchor[None])[0][0])
    if not np.isfinite(anchor_lp):
        centers = draw_centers(FACTOR_CENTERS)
        with np.errstate(all="ignore"):
            center_lps = target.logp_grad_batch(centers)[0]
        best = int(np.nanargmax(np.where(np.isfinite(center_lps), center_lps, np.nan)))
        anchor, anchor_lp = centers[best].copy(), float(center_lps[best])
    results = []
    for k, group in enumerate(groups):
        target.stage(f"sampling factor {k + 1} of {len(groups)} ({len(group)} coordinates)")
        factor = PopulationTarget(
            dim=len(group),
            logp_grad_batch=restricted(target.logp_grad_batch, group, anchor),
            report=target.report,
        )
        factor_known = None
        if known is not None and not np.any(anchor):
            factor_known = known_optimum(
                factor.logp_grad_batch, np.zeros(len(group)), np.eye(len(group))
            )
        results.append(
            run_population(
                factor,
                lambda n, group=group: draw_centers(n)[:, group],
                levels,
                rng,
                draws,
                known=factor_known,
                find_factors=False,
                **settings,
            )  # fmt: skip
        )
    if progress is not None:
        progress(len(levels) + settings["refine_sweeps"])
    return _combined(target, groups, results, anchor_lp, rng)


def _combined(target, groups, results: list[PopulationResult], anchor_lp: float, rng):
    """The factors' runs as one result (see :func:`_run_factors`)."""
    n, dim = len(results[0].samples), target.dim
    orders = [rng.permutation(n) for _ in results]
    samples = np.empty((n, dim))
    for group, result, order in zip(groups, results, orders, strict=True):
        samples[:, group] = result.samples[order]
    with np.errstate(all="ignore"):
        lps = np.asarray(target.logp_grad_batch(samples)[0], dtype=float)
    per_factor = np.stack([r.labels[o] for r, o in zip(results, orders, strict=True)], axis=1)
    combos, labels = np.unique(per_factor, axis=0, return_inverse=True)
    weights = np.ones(len(combos))
    relative_var = np.zeros(len(combos))
    for b, result in enumerate(results):
        w, se = result.estimate.weights[combos[:, b]], result.estimate.weights_se[combos[:, b]]
        weights *= w
        relative_var += (se / np.maximum(w, 1e-300)) ** 2
    order = np.argsort(-weights, kind="stable")
    combos, weights, relative_var = combos[order], weights[order], relative_var[order]
    labels = np.argsort(order)[labels.ravel()]
    locations, means = np.zeros((len(combos), dim)), np.zeros((len(combos), dim))
    roots = np.zeros((len(combos), dim, dim))
    for b, (group, result) in enumerate(zip(groups, results, strict=True)):
        modes = result.modes
        locations[:, group] = modes.locations[combos[:, b]]
        means[:, group] = modes.means[combos[:, b]]
        roots[:, group[:, None], group[None, :]] = modes.roots[combos[:, b]]
    with np.errstate(all="ignore"):
        mode_lps = np.asarray(target.logp_grad_batch(locations)[0], dtype=float)
    common = min(len(r.estimate.log_importance_weights) for r in results)
    log_w = np.sum([r.estimate.log_importance_weights[:common] for r in results], axis=0)
    finite = log_w[np.isfinite(log_w)]
    w = np.exp(finite - finite.max()) if finite.size else np.zeros(0)
    estimate = WeightEstimate(
        weights=weights,
        weights_se=weights * np.sqrt(relative_var),
        log_evidence=float(
            sum(r.estimate.log_evidence for r in results) - (len(results) - 1) * anchor_lp
        ),
        log_evidence_se=float(np.sqrt(sum(r.estimate.log_evidence_se**2 for r in results))),
        log_importance_weights=log_w,
        ess=float(w.sum() ** 2 / np.sum(w**2)) if w.size else 0.0,
    )
    mode_map = ModeMap(
        locations=locations, means=means, roots=roots, logp=mode_lps, labels=labels,
        n_grad=sum(r.modes.n_grad for r in results),
    )  # fmt: skip
    return PopulationResult(
        samples=samples,
        logp=lps,
        labels=labels,
        diverging=np.any([r.diverging[o] for r, o in zip(results, orders, strict=True)], axis=0),
        modes=mode_map,
        estimate=estimate,
        stage_stats=_stages_in_turn([r.stage_stats for r in results]),
        n_grad=sum(r.n_grad for r in results),
        checks=_worst_checks([r.checks for r in results]),
        factors=list(groups),
    )


def _stages_in_turn(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The factors' stages one run after the other (divergences running across them)."""
    out = {}
    for name in stats[0]:
        parts, offset = [], 0.0
        for s in stats:
            values = np.asarray(s[name], dtype=float)
            if name == "divergences" and len(values):
                values = values + offset
                offset = values[-1]
            parts.append(values)
        out[name] = np.concatenate(parts)
    return out


def _worst_checks(checks: list[dict[str, float]]) -> dict[str, float]:
    """Each convergence figure of the worst factor (NaN where no factor has it)."""
    out = {}
    for name in checks[0]:
        values = np.array([c.get(name, np.nan) for c in checks], dtype=float)
        if not np.isfinite(values).any():
            out[name] = np.nan
        elif name in SMALLER_IS_WORSE:
            out[name] = float(np.nanmin(values))
        else:
            out[name] = float(np.nanmax(values))
    return out


def _record_bridge(bridge: TemperedPopulation, record: Callable) -> None:
    """The bridge's levels as stages of the run (λ = 1, no jump, running divergences)."""
    for beta, eps, accept, div in zip(
        bridge.betas, bridge.step_size, bridge.acceptance, bridge.divergences, strict=True
    ):
        info = LangevinInfo(np.full(1, accept), np.full(1, div), 0)
        record(1.0, np.full(1, eps), info, np.nan, float(beta))


def _bridge_frame(modes: ModeMap, weights: np.ndarray) -> LaplaceApproximation:
    """The affine map whose whitened coordinates the bridge runs in: the one mode's Gaussian,
    or, for several, the modes' covariances averaged by their weights about the origin."""
    if modes.n_modes > 1:
        return _average_mode_gaussian(modes.roots, np.maximum(weights, 1e-12))
    # any root of the mode's covariance will do: the bridge starts from the standard Gaussian
    root = modes.roots[0]
    upper = _composable_root(root @ root.T)
    return LaplaceApproximation(modes.means[0], root if upper is None else upper, 0, True)
