"""``sample_dilation`` for PyMC models and ``sample_logdensity`` for any log density."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import xarray as xr

from pymc_dilation._compat import modelcontext, population_inference_data
from pymc_dilation.model import compile_model_logp
from pymc_dilation.population import PopulationResult, PopulationTarget, run_population
from pymc_dilation.schedules import make_schedule
from pymc_dilation.validation import check_center, check_positive_int, check_probability

__all__ = ["sample_dilation", "sample_logdensity", "LogDensityResult"]

# Chosen by benchmarks/multimodal.py sweeps (see benchmarks/RESULTS.md): on the suite's 2-, 10-
# and 50-D mixtures every setting from 100 to 850 gradients per particle reached the mode-weight
# error of exact independent draws; the refinement's mode jumps, not a long annealing, fix the
# weights. This is the cheapest setting that did so with a margin on all three.
DEFAULTS = dict(n_levels=20, lambda_min=1e-3, steps_per_level=4, refine_sweeps=10, refine_steps=4)


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


def _run_chains(target, draws, chains, center, levels, random_seed, progressbar, options):
    results = []
    stages = len(levels) + options["refine_sweeps"]
    for chain, rng in enumerate(_seeds(random_seed, chains)):
        progress, task = _progress_bar(progressbar, stages, f"Dilation chain {chain}")
        update = None
        if progress is not None:

            def update(k, progress=progress, task=task):
                progress.update(task, completed=k)

        try:
            results.append(
                run_population(
                    target,
                    draws,
                    center,
                    levels,
                    rng,
                    steps_per_level=options["steps_per_level"],
                    target_accept=options["target_accept"],
                    anneal_metropolis=options["anneal_metropolis"],
                    refine_sweeps=options["refine_sweeps"],
                    refine_steps=options["refine_steps"],
                    progress=update,
                )
            )
        finally:
            if progress is not None:
                progress.stop()
    return results


def _options(
    draws,
    chains,
    schedule,
    n_levels,
    lambda_min,
    steps_per_level,
    target_accept,
    anneal_metropolis,
    refine_sweeps,
    refine_steps,
):
    check_positive_int("draws", draws)
    check_positive_int("chains", chains)
    levels = make_schedule(schedule, check_positive_int("n_levels", n_levels), lambda_min)
    options = dict(
        steps_per_level=check_positive_int("steps_per_level", steps_per_level),
        target_accept=check_probability("target_accept", target_accept),
        anneal_metropolis=bool(anneal_metropolis),
        refine_sweeps=check_positive_int("refine_sweeps", refine_sweeps, zero=True),
        refine_steps=check_positive_int("refine_steps", refine_steps),
    )
    return levels, options


def _stage_stats(results: Sequence[PopulationResult], attrs: dict) -> xr.Dataset:
    names = results[0].stage_stats.keys()
    data = {
        name: (("chain", "stage"), np.stack([r.stage_stats[name] for r in results]))
        for name in names
    }
    return xr.Dataset(data, coords={"chain": np.arange(len(results))}, attrs=attrs)


def sample_dilation(
    draws: int = 2000,
    chains: int = 1,
    random_seed=None,
    progressbar: bool = True,
    model=None,
    *,
    center: dict | None = None,
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
    (see :mod:`pymc_dilation.population`).

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
    center : dict, optional
        Center of the path in unconstrained space; default: the model's initial point.
    schedule, n_levels, lambda_min
        The λ schedule (see :func:`pymc_dilation.schedules.make_schedule`).
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
        ``n_grad_total`` and ``sampling_time``.
    """
    from pymc.backends.ndarray import NDArray

    model = modelcontext(model)
    levels, options = _options(
        draws,
        chains,
        schedule,
        n_levels,
        lambda_min,
        steps_per_level,
        target_accept,
        anneal_metropolis,
        refine_sweeps,
        refine_steps,
    )
    logp = compile_model_logp(model)
    if logp.extra_infos:
        raise ValueError(
            "sample_dilation samples continuous variables only, and this model has discrete "
            f"ones ({', '.join(i.name for i in logp.extra_infos)}). Marginalise them out "
            "(pymc_extras.marginalize) or use pm.sample with DilationLangevin in a CompoundStep."
        )
    initial_point = model.initial_point()
    extra = np.zeros(0)
    center_vec = logp.ravel({**initial_point, **(center or {})})
    names = [info.name for info in logp.var_infos]
    center_vec = check_center(center_vec, logp.logp_grad, extra, names, logp.dim)
    target = PopulationTarget(logp.dim, logp.batch_callable(extra), logp.point_fn, extra)

    start = time.perf_counter()
    results = _run_chains(
        target, draws, chains, center_vec, levels, random_seed, progressbar, options
    )
    elapsed = time.perf_counter() - start

    traces = []
    for chain, result in enumerate(results):
        trace = NDArray(model=model)
        trace.setup(draws, chain)
        for x in result.samples:  # output conversion only, as pm.sample_smc does it
            trace.record(logp.unravel(x), in_warmup=False)
        traces.append(trace)
    attrs = {
        "n_grad": int(results[0].n_grad),
        "n_grad_total": int(sum(r.n_grad for r in results) * draws),
        "sampling_time": elapsed,
        "n_levels": len(levels),
        "n_modes_found": [len(r.mode_centers) for r in results],
    }
    return population_inference_data(traces, model, _stage_stats(results, attrs))


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

    def __init__(self, results: Sequence[PopulationResult], elapsed: float):
        self.chain_samples = np.stack([r.samples for r in results])
        self.samples = (
            self.chain_samples[0]
            if len(results) == 1
            else self.chain_samples.reshape(-1, self.chain_samples.shape[-1])
        )
        self.mode_centers = [r.mode_centers for r in results]
        self.n_grad = int(results[0].n_grad)
        self.sampling_time = elapsed
        self.stage_stats = _stage_stats(results, {"n_grad": self.n_grad})


def sample_logdensity(
    logp_grad: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    dim: int,
    draws: int = 2000,
    chains: int = 1,
    random_seed=None,
    progressbar: bool = False,
    *,
    center: Sequence[float] | np.ndarray | None = None,
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
    center : array_like, optional
        Center of the path (default: the origin).
    schedule, n_levels, lambda_min, steps_per_level, target_accept, anneal_metropolis,
    refine_sweeps, refine_steps
        As for :func:`sample_dilation`.

    Returns
    -------
    LogDensityResult
        With the ``(draws, dim)`` samples in ``.samples`` (all chains stacked when ``chains > 1``).
    """
    dim = check_positive_int("dim", dim)
    levels, options = _options(
        draws,
        chains,
        schedule,
        n_levels,
        lambda_min,
        steps_per_level,
        target_accept,
        anneal_metropolis,
        refine_sweeps,
        refine_steps,
    )
    center_vec = np.zeros(dim) if center is None else np.asarray(center, dtype=float)

    def point(x, _extra):
        lp, grad = logp_grad(x[None, :])
        return float(np.asarray(lp).reshape(-1)[0]), np.asarray(grad, dtype=float).reshape(-1)

    center_vec = check_center(center_vec, point, np.zeros(0), [f"x[{i}]" for i in range(dim)], dim)
    target = PopulationTarget(dim, logp_grad)
    start = time.perf_counter()
    results = _run_chains(
        target, draws, chains, center_vec, levels, random_seed, progressbar, options
    )
    return LogDensityResult(results, time.perf_counter() - start)
