"""``sample_dilation`` for PyMC models and ``sample_logdensity`` for any log density."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import xarray as xr

from pymc_dilation._compat import pareto_khat, population_inference_data
from pymc_dilation.centers import resolve_center
from pymc_dilation.diagnostics import PARETO_K_LIMIT, warn_unreliable
from pymc_dilation.engine.explore import overdispersed_cloud
from pymc_dilation.engine.laplace import (
    FLAT_REACH,
    LaplaceApproximation,
    flat_directions,
    laplace_approximation,
    reference_scale_approximation,
    root_log_det,
    singular_optimum,
)
from pymc_dilation.engine.modes import known_optimum
from pymc_dilation.engine.population import PopulationResult, PopulationTarget, run_population
from pymc_dilation.engine.schedules import make_schedule
from pymc_dilation.engine.symmetry import mirrored, moves_mode, orbit_mass_ratio, symmetry_move
from pymc_dilation.model import compile_model_logp, continuous_value_vars, prior_sampler
from pymc_dilation.reparam import choose_centering
from pymc_dilation.symmetry import Symmetries, detect_symmetries
from pymc_dilation.threads import one_blas_thread
from pymc_dilation.validation import (
    check_bool,
    check_center,
    check_choice,
    check_continuous_free_vars,
    check_model,
    check_positive_int,
    check_probability,
    check_random_seed,
)

__all__ = ["sample_dilation", "sample_logdensity", "LogDensityResult"]

# The annealing and refinement sizes were chosen by benchmarks/multimodal.py sweeps (see
# benchmarks/RESULTS.md); the refinement's exact jumps, not a long annealing, fix the weights.
DEFAULTS = dict(n_levels=20, lambda_min=1e-3, steps_per_level=4, refine_sweeps=10, refine_steps=4)
PRECONDITIONERS = ("laplace", "none")
MAX_PRIOR_CENTERS = 1000
"""Prior draws used as path centers at most (the rest come from the overdispersed cloud); all
come from one compiled call where PyTensor can vectorize the prior, at 0.15-0.4 ms a draw
otherwise (see :func:`~pymc_dilation.model.prior_sampler`)."""


def _whiten(
    target: PopulationTarget, start: np.ndarray, settings, names, owner: str, prior_draws=None
):
    """The engine's target, whitened by a Laplace approximation unless switched off.

    Returns ``(target, laplace)``; ``laplace`` is None with ``precondition="none"``. Raises a
    ``ValueError`` when the density does not fall along some direction from the mode found (an
    improper density; see :func:`~pymc_dilation.engine.laplace.flat_directions`). An optimum
    at a singularity of the density (:func:`~pymc_dilation.engine.laplace.singular_optimum`:
    the identified factor model of the Bayesian-workflow tutorial, an item's noise sd 3e-7)
    is not used: the prior draws' sds about ``start`` whiten the target instead.
    """
    if settings.precondition == "none":
        return target, None
    with np.errstate(all="ignore"):
        laplace = laplace_approximation(target.logp_grad_batch, start)
    if singular_optimum(laplace, prior_draws):
        laplace = reference_scale_approximation(start, prior_draws, laplace.n_grad)
        return target.whitened(laplace), laplace
    flat = flat_directions(target.logp_grad_batch, laplace)
    if len(flat):
        _refuse_improper(flat[0], laplace.mode, names, owner)
    return target.whitened(laplace), laplace


def _refuse_improper(direction: np.ndarray, mode: np.ndarray, names, owner: str) -> None:
    order = np.argsort(-np.abs(direction))[:3]
    along = ", ".join(
        f"{names[i]} ({direction[i]:+.2f})" for i in order if abs(direction[i]) > 1e-3
    )
    if owner == "sample_logdensity":
        what, fix = (
            "logp_grad looks improper",
            "A density must have a finite integral; check logp_grad, or multiply it by a "
            "proper prior.",
        )
    else:
        what, fix = (
            "The model's posterior looks improper",
            "pm.Flat and pm.HalfFlat priors need data that identify their variables; give "
            "those variables proper priors.",
        )
    raise ValueError(
        f"{what}: from the point of highest density found, the log density does not fall "
        f"along the direction {along} (it stays within 1 nat of its peak as far as "
        f"{FLAT_REACH[1]:.0e} times the scale of the other directions), so {owner} cannot "
        f"sample it. {fix}"
    )


def _to_engine(x: np.ndarray, laplace: LaplaceApproximation | None) -> np.ndarray:
    return x if laplace is None else laplace.to_whitened(x)


def _to_target(z: np.ndarray, laplace: LaplaceApproximation | None) -> np.ndarray:
    return z if laplace is None else laplace.to_density(z)


def _path_centers(rng, n, start, shared_center, prior_draws, laplace, near=None) -> np.ndarray:
    """``(n, d)`` centers in engine coordinates: the user's (shared), or prior draws and cloud.

    Without a user center, up to half of the particles start from prior draws (when the model
    has a prior PyMC can draw from) and the rest from
    :func:`~pymc_dilation.engine.explore.overdispersed_cloud` about the Laplace mode (about
    ``start`` when nothing whitens the target). With a near symmetry (``near``, see
    :class:`~pymc_dilation.symmetry.Symmetries`), half of these are mirrored by it.
    """
    if isinstance(shared_center, str):  # "map": the Laplace mode, origin of the whitened space
        return np.zeros((n, len(start)))
    if shared_center is not None:
        return np.tile(_to_engine(shared_center, laplace), (n, 1))
    centers = overdispersed_cloud(rng, n, len(start))
    if laplace is None:
        centers += start
    if prior_draws is not None and len(prior_draws):
        take = min(len(prior_draws), n // 2)
        centers[:take] = _to_engine(prior_draws[rng.permutation(len(prior_draws))[:take]], laplace)
    if near is not None:
        centers = _to_engine(mirrored(near, _to_target(centers, laplace), rng), laplace)
    return centers


def _seed_sequence(random_seed) -> np.random.SeedSequence:
    """A ``SeedSequence`` from any seed :func:`~pymc_dilation.validation.check_random_seed`
    accepts."""
    if isinstance(random_seed, np.random.SeedSequence):
        return random_seed
    if isinstance(random_seed, np.random.Generator | np.random.BitGenerator):
        return np.random.SeedSequence(np.random.default_rng(random_seed).integers(2**63))
    return np.random.SeedSequence(random_seed)


def _seeds(random_seed, chains: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in _seed_sequence(random_seed).spawn(chains)]


PROGRESS_WIDTH = 80
"""Terminal columns the progress bar's columns fit in (tested with a rich Console this wide)."""


def progress_columns() -> tuple:
    """The progress bar's columns: chain, bar, stages done, stage, elapsed and remaining time.

    At most about 75 characters, so a line fits :data:`PROGRESS_WIDTH` columns.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return (
        TextColumn("Chain {task.fields[chain]}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stage]:<14}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )


def stage_label(completed: int, n_levels: int, sweeps: int) -> str:
    """``"anneal 3/20"`` while annealing, ``"refine 2/10"`` during the refinement."""
    if completed <= n_levels:
        return f"anneal {completed}/{n_levels}"
    return f"refine {completed - n_levels}/{sweeps}"


def _progress_bar(enabled: bool, total: int, chain: int, stage: str, console=None):
    if not enabled:
        return None, None
    from rich.progress import Progress

    progress = Progress(*progress_columns(), transient=False, console=console)
    task = progress.add_task("", total=total, chain=chain, stage=stage)
    progress.start()
    return progress, task


@dataclass(frozen=True)
class _Settings:
    """Validated options of one population run (shared by both public functions)."""

    draws: int
    chains: int
    levels: np.ndarray
    steps_per_level: int
    target_accept: float
    anneal_metropolis: bool
    refine_sweeps: int
    refine_steps: int
    precondition: str


CENTER_FORMS = {
    "sample_dilation": "a dict {name: value} (random-variable names with values in their own "
    "space, as PyMC's initvals, or value-variable names in unconstrained space), an array of "
    'the raveled unconstrained values, "map" or None',
    "sample_logdensity": 'an array of dim values, "map" or None',
}


def _settings(
    *, draws, chains, schedule, n_levels, lambda_min, center, precondition, random_seed,
    progressbar, owner, **rest,
):  # fmt: skip
    check_random_seed("random_seed", random_seed, legacy=False)
    check_bool("progressbar", progressbar)
    if isinstance(center, str) and center != "map":
        raise ValueError(f"center must be {CENTER_FORMS[owner]}; got {center!r}.")
    precondition = check_choice("precondition", precondition, PRECONDITIONERS)
    if isinstance(center, str) and precondition == "none":
        raise ValueError(
            'center="map" needs precondition="laplace" (the Laplace step finds the mode); '
            'give precondition="laplace", or a center point.'
        )
    return _Settings(
        draws=check_positive_int("draws", draws),
        chains=check_positive_int("chains", chains),
        levels=make_schedule(schedule, check_positive_int("n_levels", n_levels), lambda_min),
        steps_per_level=check_positive_int("steps_per_level", rest["steps_per_level"]),
        target_accept=check_probability("target_accept", rest["target_accept"]),
        anneal_metropolis=check_bool("anneal_metropolis", rest["anneal_metropolis"]),
        refine_sweeps=check_positive_int("refine_sweeps", rest["refine_sweeps"], zero=True),
        refine_steps=check_positive_int("refine_steps", rest["refine_steps"]),
        precondition=precondition,
    )


@dataclass(frozen=True)
class _Chain:
    """One chain's run, in the target's coordinates."""

    result: PopulationResult
    samples: np.ndarray
    locations: np.ndarray
    covariances: np.ndarray
    log_evidence: float


def _in_target_coordinates(result: PopulationResult, laplace) -> _Chain:
    """Particles, mode locations and covariances mapped back; the evidence gets the Jacobian."""
    roots = result.modes.roots
    log_evidence = result.estimate.log_evidence
    if laplace is not None:
        roots = laplace.root[None] @ roots
        log_evidence += float(root_log_det(laplace.root))
    return _Chain(
        result=result,
        samples=_to_target(result.samples, laplace),
        locations=_to_target(result.modes.locations, laplace),
        covariances=roots @ np.swapaxes(roots, 1, 2),
        log_evidence=log_evidence,
    )


def _importance_reliable(log_weights: np.ndarray) -> bool:
    """Whether importance draws may be resampled to start the refinement: Pareto k̂ within
    :data:`~pymc_dilation.diagnostics.PARETO_K_LIMIT` (NaN, too few finite weights, passes)."""
    return not pareto_khat(log_weights) > PARETO_K_LIMIT


def _run_chains(
    target, start, shared_center, prior_draws, settings, random_seed, progressbar, names, owner,
    near=None,
):  # fmt: skip
    """Every chain's run (:class:`_Chain`, target coordinates), the Laplace step used, and
    the near symmetries used (those that move the Laplace mode to another one)."""
    target, laplace = _whiten(target, start, settings, names, owner, prior_draws)
    if near is not None and laplace is not None:
        if not moves_mode(near, laplace.mode, laplace.root, np.random.default_rng(0)):
            near = None
    known = None
    if laplace is not None and laplace.converged:  # its optimum, at 0 in whitened coordinates
        known = known_optimum(target.logp_grad_batch, np.zeros(len(start)), np.eye(len(start)))
    chains = []
    stages = len(settings.levels) + settings.refine_sweeps
    n_levels, sweeps = len(settings.levels), settings.refine_sweeps
    for chain, rng in enumerate(_seeds(random_seed, settings.chains)):
        progress, task = _progress_bar(progressbar, stages, chain, stage_label(0, n_levels, sweeps))
        update, chain_target = None, target
        if progress is not None:

            def update(k, progress=progress, task=task):
                progress.update(task, completed=k, stage=stage_label(k, n_levels, sweeps))

            def say(message, progress=progress, task=task):
                # the engine's stage messages (climbing, weighing, the bridge's β) between
                # the counted stages, some of which take seconds
                progress.update(task, stage=message)

            chain_target = replace(target, report=say)

        def draw_centers(n, rng=rng):
            return _path_centers(rng, n, start, shared_center, prior_draws, laplace, near)

        try:
            result = run_population(
                chain_target,
                draw_centers,
                settings.levels,
                rng,
                settings.draws,
                steps_per_level=settings.steps_per_level,
                target_accept=settings.target_accept,
                anneal_metropolis=settings.anneal_metropolis,
                refine_sweeps=settings.refine_sweeps,
                refine_steps=settings.refine_steps,
                progress=update,
                known=known,
                reliable=_importance_reliable,
            )
        finally:
            if progress is not None:
                progress.stop()
        chains.append(_in_target_coordinates(result, laplace))
    return chains, laplace, near


def _stages_padded(values: list[np.ndarray], name: str) -> np.ndarray:
    """Per-stage figures of every chain, ``(chains, stages)``: chains that ran fewer stages
    (no annealing, fewer refinement sweeps) padded with NaN, the running divergence count
    with its last value."""
    longest = max(len(v) for v in values)
    out = np.full((len(values), longest), np.nan)
    for i, v in enumerate(values):
        out[i, : len(v)] = v
        if name == "divergences" and len(v):
            out[i, len(v) :] = v[-1]
    return out


def _annealed_levels(result: PopulationResult) -> int:
    """Annealing levels the population ran (stages with no inverse temperature)."""
    return int(np.sum(np.isnan(result.stage_stats["inverse_temperature"])))


def _tempering_levels(result: PopulationResult) -> int:
    """Levels of the bridge from the map's mixture to the posterior the population ran."""
    beta = result.stage_stats["inverse_temperature"]
    return int(np.sum(np.isfinite(beta) & np.isnan(result.stage_stats["jump_acceptance"])))


def _stage_stats(chains: Sequence[_Chain], laplace, elapsed: float, names) -> xr.Dataset:
    """``sample_stats``: per stage, per particle, per mode and per chain (see sample_dilation)."""
    results = [c.result for c in chains]
    n_modes = max(r.modes.n_modes for r in results)

    def per_mode(values, fill=np.nan):
        out = np.full((len(values), n_modes, *np.shape(values[0])[1:]), fill, dtype=float)
        for i, v in enumerate(values):
            out[i, : len(v)] = v
        return out

    data = {
        name: (("chain", "stage"), _stages_padded([r.stage_stats[name] for r in results], name))
        for name in results[0].stage_stats
    }
    data["lp"] = (("chain", "draw"), np.stack([r.logp for r in results]))
    data["diverging"] = (("chain", "draw"), np.stack([r.diverging for r in results]))
    data["mode_index"] = (("chain", "draw"), np.stack([r.labels for r in results]))
    data["mode_weight"] = (("chain", "mode"), per_mode([r.estimate.weights for r in results]))
    data["mode_weight_se"] = (("chain", "mode"), per_mode([r.estimate.weights_se for r in results]))
    data["mode_particles"] = (
        ("chain", "mode"),
        per_mode([np.bincount(r.labels, minlength=r.modes.n_modes) for r in results], 0.0),
    )
    data["mode_logp"] = (("chain", "mode"), per_mode([r.modes.logp for r in results]))
    data["mode_location"] = (("chain", "mode", "param"), per_mode([c.locations for c in chains]))
    data["mode_covariance"] = (
        ("chain", "mode", "param", "param_bis"),
        per_mode([c.covariances for c in chains]),
    )
    data["log_marginal_likelihood"] = (("chain",), np.array([c.log_evidence for c in chains]))
    data["importance_ess"] = (("chain",), np.array([r.estimate.ess for r in results]))
    data["pareto_k"] = (
        ("chain",),
        np.array([pareto_khat(r.estimate.log_importance_weights) for r in results]),
    )
    for name in results[0].checks:
        data[name] = (("chain",), np.array([r.checks[name] for r in results]))
    n_particles = len(results[0].samples)
    stats = xr.Dataset(
        data,
        coords={
            "chain": np.arange(len(results)),
            "draw": np.arange(n_particles),
            "mode": np.arange(n_modes),
            "param": list(names),
            "param_bis": list(names),
        },
        attrs={
            "n_grad": int(results[0].n_grad),
            "n_grad_total": int(
                sum(r.n_grad for r in results) * n_particles + (laplace.n_grad if laplace else 0)
            ),
            "sampling_time": elapsed,
            "n_levels": max(_annealed_levels(r) for r in results),
            "n_tempering_levels": max(_tempering_levels(r) for r in results),
            "n_modes_found": [r.modes.n_modes for r in results],
        },
    )
    stats["log_marginal_likelihood"].attrs["standard_error"] = [
        r.estimate.log_evidence_se for r in results
    ]
    factored = next((r.factors for r in results if r.factors is not None), None)
    if factored is not None:
        labels = list(names)
        stats.attrs["factors"] = json.dumps([[labels[i] for i in group] for group in factored])
    warn_unreliable(stats)
    return stats


def sample_dilation(
    draws: int = 2000,
    chains: int = 1,
    random_seed=None,
    progressbar: bool = True,
    model=None,
    *,
    center: dict | str | None = None,
    precondition: str = "laplace",
    schedule: str | Sequence[float] = "geometric",
    n_levels: int = DEFAULTS["n_levels"],
    lambda_min: float = DEFAULTS["lambda_min"],
    steps_per_level: int = DEFAULTS["steps_per_level"],
    target_accept: float = 0.6,
    anneal_metropolis: bool = True,
    refine_sweeps: int = DEFAULTS["refine_sweeps"],
    refine_steps: int = DEFAULTS["refine_steps"],
    reparameterize: bool = True,
    symmetry_jumps: bool = True,
):
    """Sample a PyMC model with a population annealed along the dilation path.

    Like ``pm.sample_smc``: ``draws`` particles per chain, each chain an independent run.
    Particles follow the dilation path from their own centers (prior draws and an
    overdispersed cloud), all stepped in one compiled call per step; the modes they reach are
    mapped (hill–valley merging, a local Gaussian each), weighed by importance sampling (which
    also gives the evidence), and ``draws`` importance draws, resampled to those weights, are
    refined exactly at λ = 1 by Metropolis-adjusted Langevin sweeps and independence jumps
    between the modes (see :mod:`pymc_dilation.engine.population`). 128 centers first climb
    straight to their optima; when they find one mode (checked from annealed starts from 50
    parameters on), nothing is annealed; otherwise all ``draws`` particles are annealed and
    mapped, and where they found three modes or more, centers drawn over the modes' spread
    climb too (narrow modes have basins that no broad law of centers lands in). When the
    importance weights cannot be trusted (Pareto k̂ above 0.7, or too
    uneven to resample), sequential Monte Carlo carries the particles from the map to the
    posterior instead (see ``refine_sweeps`` below and
    :func:`~pymc_dilation.engine.population.map_population_of`).

    Parameters
    ----------
    draws : int
        Particles per chain (the draws of each chain).
    chains : int
        Independent runs.
    random_seed : int, optional
        Same seed, same draws.
    progressbar : bool
        Show a progress bar over the annealing and refinement of each chain.
    model : pymc.Model, optional
        Defaults to the model in context.
    center : dict or "map", optional
        By default every particle follows its own dilation path, from its own center: half of
        them (at most :data:`MAX_PRIOR_CENTERS`) from prior draws when PyMC can draw the prior
        (not with ``pm.Flat``), the rest from an overdispersed cloud about the posterior mode
        found from the model's initial point (see :mod:`pymc_dilation.engine.explore`). So
        modes on every side of the initial point are reached. Give a point ``{name: value}`` to
        start every particle from that one center instead (random-variable names with values in
        their own space, as PyMC's ``initvals``, or value-variable names in unconstrained space;
        unnamed variables keep the model's initial point; see
        :func:`pymc_dilation.centers.resolve_center`), or ``"map"`` for the mode of the
        Laplace step.
    precondition : {"laplace", "none"}
        ``"laplace"`` (default): find the posterior mode (BFGS) and its curvature first, and
        run the Langevin dynamics in the coordinates that whiten that Gaussian
        approximation (a dense preconditioner; the dilation path is unchanged, see
        :mod:`pymc_dilation.engine.laplace`). It adds ``O(d^2)`` work to every gradient, which
        matters only when the model's gradient is cheaper than that (large ``d``).
        ``"none"``: unit preconditioner during the annealing.
    schedule, n_levels, lambda_min
        The λ schedule (see :func:`pymc_dilation.engine.schedules.make_schedule`).
    steps_per_level : int
        Langevin steps per particle and level.
    target_accept : float
        Target acceptance of the adaptive step size, in ``(0, 1)``.
    anneal_metropolis : bool
        MALA (True) or unadjusted Langevin (False) during the annealing.
    refine_sweeps, refine_steps : int
        Refinement sweeps at λ = 1, at most, and MALA steps per sweep. The step sizes adapt
        during the first sweeps (5, or half of ``refine_sweeps`` if fewer); from the next
        one on, the refinement stops after the first sweep whose population passes its own
        convergence checks with a margin
        (:func:`~pymc_dilation.engine.convergence.failed_checks`, 1.5 times stricter than
        the warnings). Where the particles came from the bridge below, each step is a
        Hamiltonian trajectory instead, with a diagonal mass estimated from the particles
        and their gradients while the step sizes adapt (exact: a Metropolis-adjusted kernel
        with its step sizes and mass fixed afterwards).

        When the importance weights of the map's mixture cannot be trusted (Pareto k̂ above
        0.7, or too uneven to resample: funnels, weakly identified hierarchies, factor
        models), the particles are carried from that mixture to the posterior by sequential
        Monte Carlo along the geometric bridge ``q^(1-β) π^β``
        (:func:`~pymc_dilation.engine.tempering.temper`): levels chosen so that each keeps
        half the particles' effective sample size, Hamiltonian moves, the evidence from the
        levels' mean incremental weights (unbiased for ``Z``; consistent, not exact), the
        mode weights from the final particles' shares. The bridge runs again from the
        Gaussians at its particles' moments until two successive bridges agree on ``log Z``
        within 0.5 nats (at most four bridges; a larger last change is warned): one bridge
        from the map's Gaussians lags wherever the posterior is much wider than they are
        (a latent field's hyperparameters, a random walk's level).
    reparameterize : bool
        Sample location-scale variables whose scale is itself sampled (a centered hierarchy,
        a Gaussian random walk with a sampled step sd: funnels) non-centered where the data
        say little about them, as written where they pin them down
        (:mod:`pymc_dilation.reparam`). Exact (a change of variables, which
        leaves the evidence unchanged); draws, mode locations and covariances are reported
        in the model's own coordinates, and ``sample_stats.attrs["centering"]`` (JSON) gives
        each such variable's mean centering weight (1: as written, 0: non-centered).
        ``False`` samples the model as written.
    symmetry_jumps : bool
        Look for symmetries of the posterior (exchangeable mixture components, sign flips;
        :mod:`pymc_dilation.symmetry`) and, when there are some, move every particle by a
        uniformly drawn one (an exact Metropolis–Hastings jump), and count every mode's
        copies in the evidence: ``log_marginal_likelihood`` holds the mass of copies no
        particle reached (their number from the group, their mass from the copy found).
        ``sample_stats.attrs["symmetries"]`` (JSON) lists them.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        What ``pm.sample`` returns in the installed PyMC: ``posterior`` (deterministics
        included) with ``draw`` indexing particles, and ``sample_stats`` with

        - per stage (dims ``chain, stage``: the annealing levels where all particles were
          annealed, the bridge's levels where it ran, then the refinement sweeps run; a
          chain with fewer stages is padded with NaN, its running divergence count with its
          last value): ``dilation`` (λ), ``inverse_temperature`` (the bridge's β; NaN while
          annealing, 1 while refining), ``step_size`` (the particles' median),
          ``acceptance_rate`` (their mean), ``divergences`` (running count of divergent
          Langevin steps and trajectories, all particles) and ``jump_acceptance`` (NaN
          before the refinement);
        - per particle (``chain, draw``): ``lp`` (log density), ``diverging`` (a refinement
          step of the particle diverged) and ``mode_index``;
        - per mode (``chain, mode``; see :func:`pymc_dilation.mode_table`): ``mode_weight``
          and ``mode_weight_se`` (importance-sampling estimate, or the bridge's particle
          shares, and its standard error),
          ``mode_particles``, ``mode_logp``, ``mode_location`` and ``mode_covariance``
          (unconstrained space, dims ``param``, ``param_bis``);
        - per chain: ``log_marginal_likelihood`` (as ``pm.sample_smc`` names it; its standard
          error in the variable's ``standard_error`` attribute), ``importance_ess`` and
          ``pareto_k`` of the importance weights (of the bridge's last level where it
          ran), and the population's convergence figures
          ``stein_mean_z``, ``stein_mean_effect``, ``stein_cov_z``, ``stein_cov_effect``,
          ``stein_spread``, ``subpopulation_rhat``, ``particle_ess``, ``stuck_share``,
          ``unmoved_share``, ``drift_z``, ``drift_effect``, ``settled_sweep`` and
          ``invalid_share`` (particles without a finite log density, replaced by copies of
          valid ones and warned about; see
          :mod:`pymc_dilation.engine.convergence`), ``bridge_passes`` (bridges run, 0
          without one) and ``bridge_evidence_change`` (``|Δ log Z|`` of the last two);
        - attributes ``n_grad`` (gradient evaluations per particle), ``n_grad_total`` (all
          particles, the Laplace step included), ``sampling_time``, ``n_levels`` (annealing
          levels recorded, the most over the chains; 0 when no chain annealed all its
          particles), ``n_tempering_levels`` (the bridge's levels, the most over the chains;
          0 when it did not run), ``n_modes_found`` and, when the posterior is a product of
          factors with several modes each, ``factors`` (JSON: the parameters of each factor,
          sampled separately; the modes are then the combinations of the factors' modes that
          the particles visit, weighed by the products of the factors' weights).

        ``dilation``, ``step_size``, ``acceptance_rate``, ``divergences``, ``diverging`` and
        ``lp`` mean what they mean in :class:`~pymc_dilation.DilationLangevin`'s
        ``sample_stats``, with a stage of the population in place of a draw of a chain for
        the first four and a particle in place of a draw for the last two.

    Warns
    -----
    UnreliableResultWarning
        (a ``UserWarning``, see :mod:`pymc_dilation.diagnostics`) when the importance weights
        behind the mode weights and the evidence are unreliable (Pareto k̂ > 0.7), when the
        particles' final shares of the modes disagree with the estimated weights, when
        chains disagree on the modes or their weights, when successive bridges still
        disagree on the evidence, or when the refined population fails
        its own convergence checks (as in a funnel: a centered hierarchical model); the
        message says what to do.

    Raises
    ------
    ValueError
        For an invalid option (the message names it and what is allowed), a model without
        continuous free variables or with discrete ones, or a posterior that does not fall
        away from its mode along some direction (improper: ``pm.Flat`` priors that the data
        do not identify).

    Notes
    -----
    Exact: every refinement kernel (MALA steps, independence jumps) leaves the posterior
    invariant. Asymptotic: the particles' law approaches the posterior as refinement sweeps
    grow, and the mode weights and the evidence converge as particles grow; the reported
    standard errors are first-order (delta method). The refinement's length depends on the
    population (it stops when the checks pass), which is a choice of when to stop, not a
    change of kernel. A mode that no ascent or annealed path reaches is missing from all of
    them.
    """
    from pymc.backends.ndarray import NDArray

    model = check_model(model, "sample_dilation")
    settings = _settings(
        draws=draws, chains=chains, schedule=schedule, n_levels=n_levels,
        lambda_min=lambda_min, center=center, precondition=precondition,
        steps_per_level=steps_per_level, target_accept=target_accept,
        anneal_metropolis=anneal_metropolis, refine_sweeps=refine_sweeps,
        refine_steps=refine_steps, random_seed=random_seed, progressbar=progressbar,
        owner="sample_dilation",
    )  # fmt: skip
    check_bool("reparameterize", reparameterize)
    check_bool("symmetry_jumps", symmetry_jumps)
    check_continuous_free_vars(model, "sample_dilation")
    if model.discrete_value_vars:
        raise ValueError(
            "sample_dilation samples continuous variables only, and this model has discrete "
            f"ones ({', '.join(v.name for v in model.discrete_value_vars)}). Marginalise them "
            "out (pymc_extras.marginalize) or use pm.sample with DilationLangevin in a "
            "CompoundStep."
        )
    # The center is checked before the model is compiled (seconds), so a wrong one fails fast.
    names = [v.name for v in continuous_value_vars(model, None)]
    point = resolve_center(
        model, None if isinstance(center, str) else center, names, owner="sample_dilation"
    )
    logp = compile_model_logp(model, reparameterize=reparameterize)
    extra = logp.ravel_extra({})
    start_vec = check_center(point, logp.logp_grad, extra, names, logp.dim)
    if logp.reparam is not None:
        choose_centering(logp, start_vec, extra, "sample_dilation")
        extra = logp.ravel_extra({})
        start_vec = logp.from_model(start_vec, extra)
    start = time.perf_counter()
    prior = None if center is not None else prior_centers(model, logp, settings, random_seed)
    labels = parameter_labels(logp.var_infos)
    found = Symmetries()
    if symmetry_jumps:
        found = detect_symmetries(model, logp, extra, start_vec, prior, "sample_dilation")
    # Folded by the exact symmetries (PopulationTarget.fold), as DilationLangevin's tuning
    # population is: the map holds one copy of each mode, the symmetry jumps below move the
    # particles between copies, and the orbit count adds the copies' mass to the evidence.
    # Unfolded, the copies' importance weights were too uneven to resample on the symmetric
    # suite's generated mixtures, and the particles sat in spurious optima (sorted means
    # 5.7-24 sds off, warned); folded, the ascents settle on one mode: 0.02-0.13 on three of
    # four (benchmarks/RESULTS.md). Folding after annealing every particle had made those
    # weights uneven instead (Pareto k 0.75), hence the earlier choice.
    target = PopulationTarget(
        logp.dim, logp.batch_callable(extra), logp.point_fn, extra,
        fold=None if found.exact is None else found.exact.canonical,
    )  # fmt: skip
    with one_blas_thread():
        chains_out, laplace, near = _run_chains(
            target, start_vec, _shared_center(center, start_vec), prior, settings, random_seed,
            progressbar, labels, "sample_dilation", found.near,
        )  # fmt: skip
    found = replace(found, near=near)
    if found:
        rng = _seeds(random_seed, settings.chains + 1)[-1]
        density = lambda xs: logp.logp_grad_batch(xs, extra)[0]  # noqa: E731
        chains_out = [_symmetrized(run, found, density, rng) for run in chains_out]
    elapsed = time.perf_counter() - start
    chains_out = [_in_model_coordinates(run, logp, extra) for run in chains_out]

    traces = []
    for chain, run in enumerate(chains_out):
        trace = NDArray(model=model)
        trace.setup(draws, chain)
        for x in run.samples:  # output conversion only, as pm.sample_smc does it
            trace.record(logp.unravel(x), in_warmup=False)
        traces.append(trace)
    stats = _stage_stats(chains_out, laplace, elapsed, labels)
    if logp.reparam is not None:
        stats.attrs["centering"] = json.dumps(logp.reparam.summary())
    if found:
        stats.attrs["symmetries"] = json.dumps(found.describe())
    return population_inference_data(traces, model, stats)


def _symmetrized(run: _Chain, found: Symmetries, density, rng: np.random.Generator) -> _Chain:
    """Every particle moved by a uniformly drawn symmetry (exact MH; near symmetries too),
    and the evidence with every mode's copies counted
    (:func:`~pymc_dilation.engine.symmetry.orbit_mass_ratio`; unchanged when the group is too
    large to enumerate)."""
    samples, log_evidence = run.samples, run.log_evidence
    with np.errstate(all="ignore"):
        lps = density(samples)
    for group in (found.near, found.exact):
        if group is not None:
            move = symmetry_move(group, samples, lps, density, rng)
            samples, lps = move.points, move.lps
    if found.exact is not None and run.result.factors is None:  # factors: every copy sampled
        roots = np.linalg.cholesky(run.covariances + 1e-12 * np.eye(run.covariances.shape[-1]))
        weights = run.result.estimate.weights
        ratio = orbit_mass_ratio(found.exact, run.locations, roots, weights)
        log_evidence += np.log(ratio) if ratio else 0.0
    return replace(run, samples=samples, log_evidence=float(log_evidence))


def _in_model_coordinates(run: _Chain, logp, extra: np.ndarray) -> _Chain:
    """A chain's particles and modes in the model's coordinates, from the reparameterized
    ones (:mod:`pymc_dilation.reparam`): the mode covariances through the map's Jacobian at
    each mode (central differences)."""
    if logp.reparam is None:
        return run
    covariances = np.empty_like(run.covariances)
    for k, (location, covariance) in enumerate(zip(run.locations, run.covariances, strict=True)):
        step = 1e-6 * (1.0 + np.abs(location))
        rows = np.vstack([location + np.diag(step), location - np.diag(step)])
        mapped = logp.to_model(rows, extra)
        jacobian = ((mapped[: location.size] - mapped[location.size :]) / (2 * step[:, None])).T
        covariances[k] = jacobian @ covariance @ jacobian.T
    return replace(
        run,
        samples=logp.to_model(run.samples, extra),
        locations=logp.to_model(run.locations, extra),
        covariances=covariances,
    )


def _shared_center(center, start_vec: np.ndarray):
    """The one center every particle starts from, or None for a center per particle."""
    if center is None:
        return None
    if isinstance(center, str):
        return "map"
    return start_vec


def prior_centers(model, logp, settings: _Settings, random_seed) -> np.ndarray | None:
    """Up to :data:`MAX_PRIOR_CENTERS` prior draws (unconstrained) with a finite log density.

    None when PyMC cannot draw the model's prior (see :func:`~pymc_dilation.model.prior_sampler`).
    In the sampler's coordinates (``logp.from_model``).
    """
    draw = prior_sampler(model, logp.var_infos)
    n = min(MAX_PRIOR_CENTERS, settings.draws // 2)
    if draw is None or n == 0:
        return None
    seed = _seed_sequence(random_seed).spawn(settings.chains + 1)[-1]
    extra = logp.ravel_extra({})
    xs = logp.from_model(draw(n, seed.generate_state(2)), extra)
    with np.errstate(all="ignore"):
        finite = np.isfinite(logp.logp_grad_batch(xs, extra)[0])
    return xs[finite] if finite.any() else None


def parameter_labels(var_infos) -> list[str]:
    """``"name"`` or ``"name[i,j]"`` for every scalar of the raveled value variables."""
    labels = []
    for info in var_infos:
        if info.shape == ():
            labels.append(info.name)
            continue
        for index in np.ndindex(*info.shape):
            labels.append(f"{info.name}[{','.join(map(str, index))}]")
    return labels


def _center_array(center, dim: int) -> np.ndarray:
    """A ``sample_logdensity`` center as a float vector, or a ``ValueError``."""
    form = CENTER_FORMS["sample_logdensity"]
    if isinstance(center, dict | bytes) or not isinstance(
        center, Sequence | np.ndarray | int | float | np.number
    ):
        raise ValueError(f"center must be {form}; got {type(center).__name__}.")
    try:
        vec = np.asarray(center, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"center must be {form}, all numbers; got {center!r}.") from None
    if vec.ndim > 1:
        raise ValueError(f"center must be {form} (1-D); got shape {vec.shape}.")
    return vec


def _checked_output(output, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``logp_grad``'s output as ``((n,), (n, dim))`` float arrays, or a ``ValueError`` naming
    the shapes it returned and the ones it must return."""
    if not (isinstance(output, tuple | list) and len(output) == 2):
        raise ValueError(
            f"logp_grad must return a pair (logp, grad) of shapes ({n},) and ({n}, {dim}) for "
            f"an ({n}, {dim}) input; it returned {type(output).__name__}."
        )
    try:
        lp, grad = (np.asarray(v, dtype=float) for v in output)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"logp_grad must return float arrays (logp, grad) of shapes ({n},) and ({n}, {dim}); "
            f"its output is not numeric ({err})."
        ) from None
    if lp.shape != (n,) or grad.shape != (n, dim):
        raise ValueError(
            f"logp_grad must return logp of shape ({n},) and grad of shape ({n}, {dim}) for an "
            f"({n}, {dim}) input; it returned shapes {lp.shape} and {grad.shape}."
        )
    return lp, grad


class LogDensityResult:
    """Result of :func:`sample_logdensity`.

    Attributes
    ----------
    samples : numpy.ndarray
        ``(draws, dim)`` samples (the particles of the first chain; all chains stacked in
        ``chain_samples``).
    chain_samples : numpy.ndarray
        ``(chains, draws, dim)``.
    stage_stats : xarray.Dataset
        What ``sample_stats`` holds for :func:`sample_dilation` (per stage, per particle, per
        mode, per chain; ``log_marginal_likelihood`` is the log normaliser of ``logp_grad``).
    mode_locations : list of numpy.ndarray
        ``(K, dim)`` modes found by each chain.
    mode_weights : list of numpy.ndarray
        ``(K,)`` their estimated weights.
    log_marginal_likelihood : numpy.ndarray
        ``(chains,)`` log normalising constant of the density.
    n_grad : int
        Gradient evaluations per particle.
    sampling_time : float
        Seconds.
    """

    def __init__(self, chains: Sequence[_Chain], laplace, elapsed: float):
        self.chain_samples = np.stack([c.samples for c in chains])
        self.samples = (
            self.chain_samples[0]
            if len(chains) == 1
            else self.chain_samples.reshape(-1, self.chain_samples.shape[-1])
        )
        self.mode_locations = [c.locations for c in chains]
        self.mode_weights = [c.result.estimate.weights for c in chains]
        self.log_marginal_likelihood = np.array([c.log_evidence for c in chains])
        self.n_grad = int(chains[0].result.n_grad)
        self.sampling_time = elapsed
        dim = self.chain_samples.shape[-1]
        self.stage_stats = _stage_stats(chains, laplace, elapsed, [f"x[{i}]" for i in range(dim)])


def sample_logdensity(
    logp_grad: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    dim: int,
    draws: int = 2000,
    chains: int = 1,
    random_seed=None,
    progressbar: bool = False,
    *,
    center: Sequence[float] | np.ndarray | str | None = None,
    precondition: str = "laplace",
    schedule: str | Sequence[float] = "geometric",
    n_levels: int = DEFAULTS["n_levels"],
    lambda_min: float = DEFAULTS["lambda_min"],
    steps_per_level: int = DEFAULTS["steps_per_level"],
    target_accept: float = 0.6,
    anneal_metropolis: bool = True,
    refine_sweeps: int = DEFAULTS["refine_sweeps"],
    refine_steps: int = DEFAULTS["refine_steps"],
) -> LogDensityResult:
    """Sample any log density with the dilation-path particle engine; no PyMC needed.

    Parameters
    ----------
    logp_grad : callable
        ``(n, d) array -> ((n,) logp, (n, d) grad)``, evaluating all rows in one call (NumPy or
        a Numba-compiled function).
    dim : int
        Dimension ``d``.
    draws : int
        Particles per chain.
    chains, random_seed, progressbar
        As for :func:`sample_dilation`.
    center : array_like or "map", optional
        One center for every particle's path; by default each particle has its own, drawn
        from an overdispersed cloud about the mode found from the origin (see
        :func:`sample_dilation`; there is no prior to draw from here).
    precondition : {"laplace", "none"}
        As for :func:`sample_dilation`.
    schedule, n_levels, lambda_min, steps_per_level, target_accept, anneal_metropolis,
    refine_sweeps, refine_steps
        As for :func:`sample_dilation`.

    Returns
    -------
    LogDensityResult
        With the ``(draws, dim)`` samples in ``.samples`` (all chains stacked when ``chains > 1``).

    Warns
    -----
    UnreliableResultWarning
        As :func:`sample_dilation` does.

    Raises
    ------
    TypeError
        If ``logp_grad`` is not callable.
    ValueError
        For an invalid option; when ``logp_grad``'s output at the center is not a pair of
        arrays of shapes ``(1,)`` and ``(1, dim)`` (checked on the first call, before any
        sampling; the message names the shapes it returned) or not finite; or when the
        density does not fall away from its mode along some direction (improper).
    """
    dim = check_positive_int("dim", dim)
    settings = _settings(
        draws=draws, chains=chains, schedule=schedule, n_levels=n_levels,
        lambda_min=lambda_min, center=center, precondition=precondition,
        steps_per_level=steps_per_level, target_accept=target_accept,
        anneal_metropolis=anneal_metropolis, refine_sweeps=refine_sweeps,
        refine_steps=refine_steps, random_seed=random_seed, progressbar=progressbar,
        owner="sample_logdensity",
    )  # fmt: skip
    if not callable(logp_grad):
        raise TypeError(
            "logp_grad must be a callable (n, d) array -> ((n,) logp, (n, d) grad); got "
            f"{type(logp_grad).__name__}."
        )
    if center is None or isinstance(center, str):
        start_vec = np.zeros(dim)
    else:
        start_vec = _center_array(center, dim)

    def point(x, _extra):
        lp, grad = _checked_output(logp_grad(x[None, :]), 1, dim)
        return float(lp[0]), grad[0]

    start_vec = check_center(
        start_vec, point, np.zeros(0), [f"x[{i}]" for i in range(dim)], dim,
        hint="Pass center= a point (length dim) where logp_grad returns a finite log density "
        "and gradient.",
    )  # fmt: skip
    start = time.perf_counter()
    target = PopulationTarget(dim, lambda xs: _checked_output(logp_grad(xs), len(xs), dim))
    with one_blas_thread():
        chains_out, laplace, _ = _run_chains(
            target, start_vec, _shared_center(center, start_vec), None, settings, random_seed,
            progressbar, [f"x[{i}]" for i in range(dim)], "sample_logdensity",
        )  # fmt: skip
    return LogDensityResult(chains_out, laplace, time.perf_counter() - start)
