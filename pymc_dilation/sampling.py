"""``sample_dilation`` for PyMC models and ``sample_logdensity`` for any log density."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import xarray as xr

from pymc_dilation._compat import modelcontext, population_inference_data
from pymc_dilation.engine.laplace import LaplaceApproximation, laplace_approximation
from pymc_dilation.engine.population import PopulationResult, PopulationTarget, run_population
from pymc_dilation.engine.schedules import make_schedule
from pymc_dilation.model import compile_model_logp
from pymc_dilation.validation import (
    check_center,
    check_choice,
    check_positive_int,
    check_probability,
)

__all__ = ["sample_dilation", "sample_logdensity", "LogDensityResult"]

# Chosen by benchmarks/multimodal.py sweeps (see benchmarks/RESULTS.md): on the suite's 2-, 10-
# and 50-D mixtures every setting from 100 to 850 gradients per particle reached the mode-weight
# error of exact independent draws; the refinement's mode jumps, not a long annealing, fix the
# weights. This is the cheapest setting that did so with a margin on all three.
DEFAULTS = dict(n_levels=20, lambda_min=1e-3, steps_per_level=4, refine_sweeps=10, refine_steps=4)
PRECONDITIONERS = ("laplace", "none")


def far_center_radius(dim: int) -> float:
    """Whitened distance beyond which a default center is moved to the Laplace mode.

    Under the Laplace approximation a posterior draw lies about ``sqrt(dim)`` whitened units
    from the mode. A center many times farther than that is outside the posterior's mass: the
    path would carry the particles through tails where the step size that suits the bulk fails
    (measured on the posteriordb regressions: 40-120 units). The margin is generous because on
    a multimodal posterior the approximation describes one mode only, and a center between the
    modes (8-9 units from each on the multimodal suite) is what lets the path find them all.
    """
    return 3.0 * np.sqrt(dim) + 10.0


def _whiten(target: PopulationTarget, center: np.ndarray, center_is_default: bool, settings):
    """The engine's target and center: whitened by a Laplace approximation unless switched off.

    Returns ``(target, center, laplace)``; ``laplace`` is None with ``precondition="none"``.
    """
    if settings.precondition == "none":
        return target, center, None
    laplace = laplace_approximation(target.logp_grad_batch, center)
    z_center = laplace.to_whitened(center)
    far = np.linalg.norm(z_center) > far_center_radius(target.dim)
    if settings.center_at_mode or (center_is_default and far):
        z_center = np.zeros(target.dim)
    return target.whitened(laplace), z_center, laplace


def _in_target_coordinates(result: PopulationResult, laplace: LaplaceApproximation | None):
    if laplace is None:
        return result
    return replace(
        result,
        samples=laplace.to_density(result.samples),
        mode_centers=laplace.to_density(result.mode_centers),
    )


def _seeds(random_seed, chains: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(random_seed).spawn(chains)]


def _progress_bar(enabled: bool, total: int, description: str):
    if not enabled:
        return None, None
    from rich.progress import Progress

    progress = Progress(transient=False)
    task = progress.add_task(description, total=total)
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
    center_at_mode: bool


def _settings(*, draws, chains, schedule, n_levels, lambda_min, center, precondition, **rest):
    center_at_mode = isinstance(center, str) and check_choice("center", center, ("map",)) == "map"
    if center_at_mode and precondition == "none":
        raise ValueError('center="map" needs precondition="laplace" (it finds the mode).')
    return _Settings(
        draws=check_positive_int("draws", draws),
        chains=check_positive_int("chains", chains),
        levels=make_schedule(schedule, check_positive_int("n_levels", n_levels), lambda_min),
        steps_per_level=check_positive_int("steps_per_level", rest["steps_per_level"]),
        target_accept=check_probability("target_accept", rest["target_accept"]),
        anneal_metropolis=bool(rest["anneal_metropolis"]),
        refine_sweeps=check_positive_int("refine_sweeps", rest["refine_sweeps"], zero=True),
        refine_steps=check_positive_int("refine_steps", rest["refine_steps"]),
        precondition=check_choice("precondition", precondition, PRECONDITIONERS),
        center_at_mode=isinstance(center, str)
        and check_choice("center", center, ("map",)) == "map",
    )


def _run_chains(target, center, center_is_default, settings: _Settings, random_seed, progressbar):
    """Every chain's run, in the target's coordinates, and the Laplace approximation used."""
    target, center, laplace = _whiten(target, center, center_is_default, settings)
    results = []
    stages = len(settings.levels) + settings.refine_sweeps
    for chain, rng in enumerate(_seeds(random_seed, settings.chains)):
        progress, task = _progress_bar(progressbar, stages, f"Dilation chain {chain}")
        update = None
        if progress is not None:

            def update(k, progress=progress, task=task):
                progress.update(task, completed=k)

        try:
            results.append(
                run_population(
                    target,
                    settings.draws,
                    center,
                    settings.levels,
                    rng,
                    steps_per_level=settings.steps_per_level,
                    target_accept=settings.target_accept,
                    anneal_metropolis=settings.anneal_metropolis,
                    refine_sweeps=settings.refine_sweeps,
                    refine_steps=settings.refine_steps,
                    progress=update,
                )
            )
        finally:
            if progress is not None:
                progress.stop()
    return [_in_target_coordinates(r, laplace) for r in results], laplace


def _stage_stats(results: Sequence[PopulationResult], laplace, elapsed: float) -> xr.Dataset:
    """Per-stage statistics (dims ``chain, stage``) and the run's totals as attributes."""
    names = results[0].stage_stats.keys()
    data = {
        name: (("chain", "stage"), np.stack([r.stage_stats[name] for r in results]))
        for name in names
    }
    n_particles = len(results[0].samples)
    attrs = {
        "n_grad": int(results[0].n_grad),
        "n_grad_total": int(
            sum(r.n_grad for r in results) * n_particles + (laplace.n_grad if laplace else 0)
        ),
        "sampling_time": elapsed,
        "n_levels": int(np.sum(results[0].stage_stats["dilation"] < 1.0)) + 1,
        "n_modes_found": [len(r.mode_centers) for r in results],
    }
    return xr.Dataset(data, coords={"chain": np.arange(len(results))}, attrs=attrs)


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
):
    """Sample a PyMC model with a population annealed along the dilation path.

    Like ``pm.sample_smc``: ``draws`` particles per chain, each chain an independent run. The
    particles start at ``center``, are annealed together along the λ schedule with adaptive
    Langevin steps (all particles in one compiled call per step), then refined exactly at λ = 1
    by Metropolis-adjusted Langevin sweeps and mode-jump moves that correct the mode weights
    (see :mod:`pymc_dilation.engine.population`).

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
        Center of the path, where every particle starts: a point ``{name: value}`` in
        unconstrained (value variable) space, merged into the model's initial point, or
        ``"map"`` for the mode found by the Laplace step. Default: the model's initial point,
        unless it lies far outside the posterior's mass (more than
        :func:`~pymc_dilation.sampling.far_center_radius` whitened units from the mode),
        when the mode is used. Put the center between the modes of a multimodal posterior:
        the path finds the modes around it.
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
        Refinement sweeps at λ = 1 and MALA steps per sweep.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        What ``pm.sample`` returns in the installed PyMC: ``posterior`` (deterministics
        included) with ``draw`` indexing particles, ``sample_stats`` with per-stage ``dilation``,
        ``step_size``, ``acceptance_rate``, ``divergences`` and ``jump_acceptance`` (dims
        ``chain, stage``), and attributes ``n_grad`` (gradient evaluations per particle),
        ``n_grad_total`` (all particles, the Laplace step included), ``sampling_time``,
        ``n_levels`` and ``n_modes_found``.
    """
    from pymc.backends.ndarray import NDArray

    model = modelcontext(model)
    settings = _settings(
        draws=draws, chains=chains, schedule=schedule, n_levels=n_levels,
        lambda_min=lambda_min, center=center, precondition=precondition,
        steps_per_level=steps_per_level, target_accept=target_accept,
        anneal_metropolis=anneal_metropolis, refine_sweeps=refine_sweeps,
        refine_steps=refine_steps,
    )  # fmt: skip
    if center is not None and not isinstance(center, dict | str):
        raise ValueError(f'center must be a dict {{name: value}}, "map" or None; got {center!r}.')
    logp = compile_model_logp(model)
    if logp.extra_infos:
        raise ValueError(
            "sample_dilation samples continuous variables only, and this model has discrete "
            f"ones ({', '.join(i.name for i in logp.extra_infos)}). Marginalise them out "
            "(pymc_extras.marginalize) or use pm.sample with DilationLangevin in a CompoundStep."
        )
    extra = np.zeros(0)
    point = model.initial_point()
    if isinstance(center, dict):
        point = {**point, **center}
    names = [info.name for info in logp.var_infos]
    center_vec = check_center(logp.ravel(point), logp.logp_grad, extra, names, logp.dim)
    target = PopulationTarget(logp.dim, logp.batch_callable(extra), logp.point_fn, extra)

    start = time.perf_counter()
    results, laplace = _run_chains(
        target, center_vec, center is None, settings, random_seed, progressbar
    )
    elapsed = time.perf_counter() - start

    traces = []
    for chain, result in enumerate(results):
        trace = NDArray(model=model)
        trace.setup(draws, chain)
        for x in result.samples:  # output conversion only, as pm.sample_smc does it
            trace.record(logp.unravel(x), in_warmup=False)
        traces.append(trace)
    return population_inference_data(traces, model, _stage_stats(results, laplace, elapsed))


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
        Per-stage ``dilation``, ``step_size``, ``acceptance_rate``, ``divergences``,
        ``jump_acceptance`` (dims ``chain, stage``).
    mode_centers : list of numpy.ndarray
        Modes found by each chain's refinement.
    n_grad : int
        Gradient evaluations per particle.
    sampling_time : float
        Seconds.
    """

    def __init__(self, results: Sequence[PopulationResult], laplace, elapsed: float):
        self.chain_samples = np.stack([r.samples for r in results])
        self.samples = (
            self.chain_samples[0]
            if len(results) == 1
            else self.chain_samples.reshape(-1, self.chain_samples.shape[-1])
        )
        self.mode_centers = [r.mode_centers for r in results]
        self.n_grad = int(results[0].n_grad)
        self.sampling_time = elapsed
        self.stage_stats = _stage_stats(results, laplace, elapsed)


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
        Center of the path (default: the origin, moved to the mode when far outside the
        posterior's mass, as for :func:`sample_dilation`).
    precondition : {"laplace", "none"}
        As for :func:`sample_dilation`.
    schedule, n_levels, lambda_min, steps_per_level, target_accept, anneal_metropolis,
    refine_sweeps, refine_steps
        As for :func:`sample_dilation`.

    Returns
    -------
    LogDensityResult
        With the ``(draws, dim)`` samples in ``.samples`` (all chains stacked when ``chains > 1``).
    """
    dim = check_positive_int("dim", dim)
    settings = _settings(
        draws=draws, chains=chains, schedule=schedule, n_levels=n_levels,
        lambda_min=lambda_min, center=center, precondition=precondition,
        steps_per_level=steps_per_level, target_accept=target_accept,
        anneal_metropolis=anneal_metropolis, refine_sweeps=refine_sweeps,
        refine_steps=refine_steps,
    )  # fmt: skip
    if center is None or isinstance(center, str):
        center_vec = np.zeros(dim)
    else:
        center_vec = np.asarray(center, dtype=float)

    def point(x, _extra):
        lp, grad = logp_grad(x[None, :])
        return float(np.asarray(lp).reshape(-1)[0]), np.asarray(grad, dtype=float).reshape(-1)

    center_vec = check_center(center_vec, point, np.zeros(0), [f"x[{i}]" for i in range(dim)], dim)
    start = time.perf_counter()
    results, laplace = _run_chains(
        PopulationTarget(dim, logp_grad), center_vec, center is None, settings, random_seed,
        progressbar,
    )  # fmt: skip
    return LogDensityResult(results, laplace, time.perf_counter() - start)
