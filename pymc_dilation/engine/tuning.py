"""One chain's tuning of its kernel: step size, trajectory length and preconditioner.

:class:`ChainTuning` holds what a chain adapts while PyMC tunes it, and nothing about PyMC or
the mode map (the step method feeds it draws and asks it for the kernel's parameters):

- the **step size**, by dual averaging towards ``target_accept``
  (:class:`~pymc_dilation.engine.adaptation.DualAveraging`), restarted at the end of every
  window from the step it reached; a window (from the third on) in which trajectories
  diverged raises the target for the rest of tuning (:meth:`ChainTuning.update`), as a user
  raises ``target_accept`` when NUTS reports divergences;
- the **trajectory length**: drawn from the U-turn lengths the chain measured while tuning
  (``"uturn"``, :class:`~pymc_dilation.engine.adaptation.UTurnLengths`), or adapted by the
  ChEES criterion on its own transitions (``"chees"``,
  :class:`~pymc_dilation.engine.adaptation.TrajectoryLength`);
- the **preconditioner** (:class:`~pymc_dilation.engine.metric.Metric`): started from a
  covariance (the curvature at the chain's mode), then corrected at the end of each window
  from the window's draws and gradients, in the coordinates the current metric whitens. The
  windows are Stan's: 25 iterations, then doubling, the last stretched to end
  :data:`FINAL_STEP_WINDOW` iterations before tuning does.
"""

from __future__ import annotations

import numpy as np

from pymc_dilation.engine.adaptation import (
    DualAveraging,
    RunningMean,
    TrajectoryLength,
    UTurnLengths,
    WindowSamples,
)
from pymc_dilation.engine.metric import (
    EIGENVALUE_CUTOFF,
    Metric,
    estimate_metric,
    metric_from_covariance,
    noise_cutoff,
    whitened_variances,
)

__all__ = [
    "ChainTuning",
    "PRECONDITIONERS",
    "TRAJECTORY_LENGTHS",
    "FIRST_WINDOW",
    "FINAL_STEP_WINDOW",
]

PRECONDITIONERS = ("low-rank", "dense", "diagonal")
TRAJECTORY_LENGTHS = ("uturn", "chees")
FIRST_WINDOW = 25
FINAL_STEP_WINDOW = 50
LOW_RANK_MAX = 100_000
"""Directions the ``"low-rank"`` preconditioner corrects at most: no cap, the cutoff decides
(each costs ``O(d)`` per gradient evaluation; a 64-direction cap lost the correlations of a
200-D regression, whose whitened spectrum then stayed 4-7 wide)."""
INITIAL_LENGTH = 1.0
"""Trajectory length (whitened units) at the start of tuning: the chain starts whitened by
the curvature at its mode, where the posterior's sds are about 1."""
MAX_LEAPFROG = 1024
"""Most leapfrog steps of one trajectory (PyMC's NUTS: 2^max_treedepth = 1024)."""
FULL_ESTIMATE_MAX_DIM = 500
"""Above this dimension a window's correction is estimated from at most ``d / 4`` of its
draws, evenly spaced (its diagonal from all of them; see
:func:`~pymc_dilation.engine.metric.estimate_metric`): the draws and gradients then span
``d / 2`` dimensions rather than up to ``d``. At 1005 parameters the last window (575 draws)
cost 0.62 s a chain in two ``1005 × 1005`` eigendecompositions, against about 0.05 s; its
correction changed 4 directions of 91."""
CONTRADICTED_MAX_RANK = 16
"""Directions the ``"low-rank"`` preconditioner corrects at most (unless the user chose
``max_rank``) once the first window's draws and gradients contradict the curvature at the mode
(:func:`_curvature_holds`). There the curvature misstates the spread in most directions (the
median direction off by 5-8 on hierarchies of 20-500 groups, radon and stochastic
volatility; by 2 % to 35 % on the Gaussian regressions, kidiq, arK, garch, sblrc and
earnings), later windows pin a direction down only to about a factor 2, and each direction
costs ``O(d)`` per leapfrog step. The first window still runs with all of the curvature's
directions and its refit sees them all; only then are the 16 furthest off kept. Measured (PyMC
6, min bulk / tail ESS per second, before -> now), seeds 1-4: the 500-group hierarchy 69 / 84
-> 74 / 100, stochastic volatility (252 parameters) 77 / 104 -> 99 / 136, radon 199 / 226 ->
208 / 272, 100 groups 406 / 535 -> 418 / 543; held-out seeds 5-7: stochastic volatility of
500 returns 18 / 25 -> 32 / 46, another 500-group hierarchy 60 / 87 -> 68 / 105, 300 groups
134 / 172 -> 145 / 211, 100 groups 347 / 439 -> 395 / 547, radon 189 / 222 -> 159 / 175.
On stochastic volatility of 500 returns the curvature's most extreme directions are the most
wrong: refitting from only those 16 once the first window contradicted them left min bulk ESS
4-67 (seeds 5-7), ``max_rank=16`` from the start 107-249 (seeds 5-6), against 327-464 so
(benchmarks/RESULTS.md)."""
CAPPED_MIN_DIM = 4 * CONTRADICTED_MAX_RANK
"""The cap applies to models of more parameters than this only: a direction costs about
0.25 ns × d per leapfrog step, so below it the directions the cap removes save little (a
20-group hierarchy, d = 45: min bulk / tail ESS per second 504 / 629 -> 401 / 425 with the
cap, held-out seeds 5-7)."""
DIVERGENCE_RATE = 0.01
"""Share of a window's trajectories that may diverge before the step-size target is raised
(see :meth:`ChainTuning.update`)."""
MAX_TARGET_ACCEPT = 0.99
"""The step-size target is raised no further than this."""


class ChainTuning:
    """Step size, trajectory length and preconditioner of one chain, adapted while it tunes.

    Parameters
    ----------
    dim : int
        Number of coordinates.
    precondition : {"low-rank", "dense", "diagonal"}
        Which directions the metric may correct (see :attr:`max_rank` and :attr:`cutoff`).
    target_accept : float
        Target acceptance of the step-size adaptation.
    initial_step : float
        Step size at the start, in whitened units.
    tune : int or None
        Tuning iterations, when known (places the last window's end).
    trajectory : {"uturn", "chees"}
        How the trajectory length is chosen (see the module docstring).
    rank_cap : int or None
        Directions the metric corrects at most, whatever ``precondition`` allows (None: no
        cap).
    """

    def __init__(
        self,
        dim: int,
        precondition: str,
        target_accept: float,
        initial_step: float,
        tune: int | None,
        trajectory: str = "uturn",
        rank_cap: int | None = None,
    ):
        self.dim = dim
        self.precondition = precondition
        self.rank_cap = rank_cap
        self.tune = tune
        self.trajectory = trajectory
        self.step = DualAveraging(initial_step, target_accept)
        self.initial_target_accept = target_accept
        self.window_divergences = 0
        self.length = TrajectoryLength(INITIAL_LENGTH, MAX_LEAPFROG)
        self.uturns = UTurnLengths(INITIAL_LENGTH, MAX_LEAPFROG)
        self.window = WindowSamples(dim)
        self.window_end = FIRST_WINDOW
        self.window_length = FIRST_WINDOW
        self.metric: Metric | None = None
        self.curvature_holds: bool | None = None
        self.mean: RunningMean | None = None
        self.final_step = initial_step
        self.final_length = INITIAL_LENGTH

    @property
    def max_rank(self) -> int:
        """Directions the metric corrects beyond its diagonal, at most."""
        rank = {"dense": self.dim, "diagonal": 0, "low-rank": min(self.dim, LOW_RANK_MAX)}[
            self.precondition
        ]
        if self.rank_cap is not None:
            return min(rank, self.rank_cap)
        if (
            self.precondition == "low-rank"
            and self.curvature_holds is False
            and self.dim > CAPPED_MIN_DIM
        ):
            return min(rank, CONTRADICTED_MAX_RANK)
        return rank

    @property
    def cutoff(self) -> float:
        """Eigenvalues of a covariance within this factor of its diagonal's are not corrected
        (every one is, for ``"dense"``)."""
        return 1.0 if self.precondition == "dense" else EIGENVALUE_CUTOFF

    def initial_metric(self, covariance: np.ndarray) -> Metric:
        """The first preconditioner, from a covariance (the curvature at the mode)."""
        return metric_from_covariance(covariance, max_rank=self.max_rank, cutoff=self.cutoff)

    def step_size(self, tuning: bool) -> float:
        """The step size to use now: the adapting one while tuning, the averaged one after."""
        return self.step.step_size if tuning else self.final_step

    def trajectory_steps(
        self, tuning: bool, step_size: float, rng: np.random.Generator
    ) -> tuple[int, float, int]:
        """The next trajectory: ``(n_steps, jitter, extend_to)``, ``extend_to`` the steps to
        continue it to, for measurement, when it has not turned back (0: not at all)."""
        if self.trajectory == "uturn":
            n_steps, jitter = self.uturns.n_steps(step_size, rng)
            # Measured from the third window on, once the metric has been refitted twice: in
            # the first the step size swings over two orders of magnitude (a 0.01 step took
            # 1024 steps to turn on a 500-group hierarchy), and lengths measured before the
            # last refits are not used after tuning anyway. From the third window rather than
            # the second, seeds 1-2: the 500-group hierarchy 17-18 s -> 16 s a call, min ESS/s
            # up on 11 of 14 runs (radon's tail ESS 124-183 -> 426-460), none down by more
            # than 9 % (benchmarks/RESULTS.md).
            measure = tuning and self.window_length > 2 * FIRST_WINDOW
            return n_steps, jitter, MAX_LEAPFROG if measure else 0
        jitter = float(rng.uniform())
        length = self.length.length if tuning else self.final_length
        return self.length.n_steps(length, step_size, jitter), jitter, 0

    def record_trajectory(
        self,
        start: np.ndarray,
        mean: np.ndarray,
        end: np.ndarray,
        end_momentum: np.ndarray,
        acceptance: float,
        uturn: int,
        n_grad: int,
        jitter: float,
        step_size: float,
    ) -> None:
        """Learn from one tuning trajectory: its U-turn (``"uturn"``), or one ChEES step from
        its start ``start`` and proposal ``end`` about the chain's mean ``mean`` (density
        coordinates; the proposal's momentum ``end_momentum`` whitened)."""
        if self.trajectory == "uturn":
            if uturn >= 0 or n_grad >= MAX_LEAPFROG:
                self.uturns.add(uturn, step_size)
            return
        self.length.update(
            self.metric.to_whitened(start),
            self.metric.to_whitened(end),
            end_momentum,
            self.metric.to_whitened(mean),
            acceptance,
            jitter,
            step_size,
        )

    def chain_mean(self, fallback: np.ndarray) -> np.ndarray:
        """The mean of the chain's recent tuning draws (``fallback`` before it has any)."""
        return fallback if self.mean is None else self.mean.mean

    def window_ends(self, iteration: int) -> bool:
        """Whether the draw of ``iteration`` ends an adaptation window (see :meth:`update`)."""
        return iteration + 1 >= self.window_end

    def update(
        self,
        iteration: int,
        x: np.ndarray,
        deviation: np.ndarray,
        grad: np.ndarray,
        acceptance: float,
        diverging: bool = False,
    ) -> bool:
        """Take in one tuning draw; True when a window ended and the metric changed.

        ``deviation`` is the draw as the window should see it (the draw itself, or its offset
        from the mean of its mode for a chain that jumps between modes); ``grad`` the log
        density's gradient there; ``diverging`` whether the draw's trajectory diverged.

        When more than :data:`DIVERGENCE_RATE` of a window's trajectories diverged, from the
        third window on (once the metric has been refitted twice, so that the divergences
        come from the posterior's geometry rather than the first windows' metric), the
        step-size target moves halfway to 1 (0.8, 0.9, 0.95, ... at most
        :data:`MAX_TARGET_ACCEPT`) for the rest of tuning. A mean acceptance of 0.8 can hide
        a region where the step is unstable (a funnel's neck; gp_pois_regr's latent field
        when its scale is large), and a chain that enters it after tuning stays stuck there:
        on gp_pois_regr 3 runs of 10 had a chain with 38-42 divergences in 1000 draws and a
        tail ESS of 12-20 at 0.8; none at 0.95.
        """
        self.step.update(acceptance)
        self.window_divergences += bool(diverging)
        if self.mean is None:
            self.mean = RunningMean(x)
        self.mean.add(x)
        self.window.add(deviation, grad)
        if not self.window_ends(iteration):
            return False
        self._raise_target(self.window.n)
        changed = self._correct_metric()
        if changed:
            self.uturns.restart()
        self.window.reset()
        self.mean.restart()
        self.step.restart(self.step.step_size_bar, bias=1.0)
        self.window_length *= 2
        self.window_end = iteration + 1 + self.window_length
        if self.tune is not None:
            last_useful = self.tune - FINAL_STEP_WINDOW
            if self.window_end + 2 * self.window_length > last_useful:
                self.window_end = max(self.window_end, last_useful)
        return changed

    @property
    def target_accept(self) -> float:
        """The step-size adaptation's target acceptance now."""
        return self.step.target_accept

    def _raise_target(self, draws: int) -> None:
        """Raise the step-size target if too many of the window's ``draws`` diverged."""
        divergences, self.window_divergences = self.window_divergences, 0
        if self.window_length <= 2 * FIRST_WINDOW or divergences <= DIVERGENCE_RATE * draws:
            return
        target = self.step.target_accept
        self.step.target_accept = min(MAX_TARGET_ACCEPT, 1.0 - 0.5 * (1.0 - target))

    def _correct_metric(self) -> bool:
        """Correct the metric from the window's draws and gradients.

        The correction is estimated where the current metric whitens the posterior: there a
        few draws give about the identity, and eigenvalues within what sampling noise gives
        (:func:`~pymc_dilation.engine.metric.noise_cutoff`) leave it as it is; a metric
        estimated afresh from a 25-draw window in 200-D threw away an exact curvature
        (whitened step 0.05, ESS 90).
        """
        draws, grads = self.window.arrays()
        if len(draws) < 2:
            return False
        metric = self.metric
        if self.curvature_holds is None:
            self.curvature_holds = _curvature_holds(metric, draws, grads)
        span_draws = len(draws)
        if self.dim > FULL_ESTIMATE_MAX_DIM:
            span_draws = min(span_draws, max(2, self.dim // 4))
        cutoff = max(self.cutoff, noise_cutoff(span_draws, self.dim))
        correction = estimate_metric(
            metric.to_whitened(draws), metric.gradient_to_whitened(grads), self.max_rank, cutoff,
            span_draws=span_draws,
        )  # fmt: skip
        refined = metric.refined(correction, self.max_rank, self.cutoff)
        if not refined.finite:
            return False
        self.metric = refined
        return True

    def freeze(self) -> None:
        """End tuning: the averaged step size and the trajectory lengths are used from now
        on."""
        self.final_step = self.step.step_size_bar
        self.final_length = self.length.length_bar
        self.uturns.freeze()


def _curvature_holds(metric: Metric, draws: np.ndarray, grads: np.ndarray) -> bool:
    """Whether the first window's draws and gradients bear out the metric's directions (the
    curvature at the mode): the median of their variances in the metric's whitened
    coordinates (:func:`~pymc_dilation.engine.metric.whitened_variances`, exactly 1 for a
    Gaussian) within a factor :data:`EIGENVALUE_CUTOFF` of 1. A metric without directions
    has nothing to contradict."""
    if metric.rank == 0:
        return True
    variances = whitened_variances(metric, draws, grads)
    variances = variances[np.isfinite(variances) & (variances > 0)]
    if variances.size == 0:
        return True
    return bool(np.median(np.abs(np.log(variances))) <= np.log(EIGENVALUE_CUTOFF))
