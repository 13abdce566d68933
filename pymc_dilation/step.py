"""``DilationLangevin``: a PyMC step method that tunes by annealing along the dilation path."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from pymc.blocking import DictToArrayBijection, RaveledVars
from pymc.step_methods.compound import BlockedStep, Competence
from pymc.util import get_random_generator
from pymc.vartypes import continuous_types

from pymc_dilation._compat import ChainSetupMixin
from pymc_dilation.centers import resolve_center
from pymc_dilation.engine.adaptation import DiagonalVariance, DualAveraging
from pymc_dilation.engine.kernels import langevin_steps_compiled, langevin_steps_vectorized
from pymc_dilation.engine.path import dilate, dilated_logp, undilate
from pymc_dilation.engine.schedules import make_schedule
from pymc_dilation.model import compile_model_logp, continuous_value_vars
from pymc_dilation.validation import (
    check_bool,
    check_center,
    check_choice,
    check_continuous_free_vars,
    check_model,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_random_seed,
)

__all__ = ["DilationLangevin"]

FIRST_WINDOW = 25
FINAL_STEP_WINDOW = 50


def _check_vars(model, vars) -> None:
    """A ``ValueError`` naming ``vars`` for anything but free variables of ``model``."""
    if vars is None:
        check_continuous_free_vars(model, "DilationLangevin")
        return
    items = list(vars) if isinstance(vars, list | tuple) else [vars]
    if not items:
        raise ValueError("vars is empty: give free variables of the model, or None for all.")
    free = list(model.free_RVs) + list(model.value_vars)
    names = [rv.name for rv in model.free_RVs]
    names += [v.name for v in model.value_vars if v.name not in names]
    allowed = ", ".join(map(repr, names))
    for item in items:
        if isinstance(item, str):
            ok = item in names
        else:
            ok = any(item is var for var in free)
        if not ok:
            raise ValueError(
                f"vars has {item!r}, which is not a free variable of the model; vars takes "
                f"free variables or their names: {allowed}."
            )


def _check_schedule(schedule):
    """``schedule`` if it is a name or a sequence of numbers, or a ``ValueError``."""
    if isinstance(schedule, str):
        return schedule
    message = (
        "schedule must be 'geometric', 'power' or an increasing array of levels in (0, 1] "
        f"ending at 1; got {schedule!r}."
    )
    if not isinstance(schedule, list | tuple | np.ndarray):
        raise ValueError(message)
    try:
        levels = np.asarray(schedule, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError(message)
    return levels


class DilationLangevin(ChainSetupMixin, BlockedStep):
    r"""Metropolis-adjusted Langevin sampling, tuned by annealing along the dilation path.

    Tuning walks the dilation path from a Dirac at ``center`` to the posterior: during the first
    tuning iterations the chain follows ``p_lam``, the posterior shrunk towards the center by
    ``sqrt(lam)``, with ``lam`` rising along ``schedule`` from ``lambda_min`` to 1. With a
    ``center`` given, each chain starts its annealing at the center itself; without one, at
    its start point from ``pm.sample`` (``initvals``), the center being the model's initial
    point. The remaining tuning iterations adapt the step size (dual averaging towards
    ``target_accept``) and a diagonal preconditioner (the posterior variances, in doubling
    windows) at ``lam = 1``. Draws are Metropolis-adjusted Langevin (MALA) steps on the
    posterior itself, so the chain is exact.

    Each iteration runs ``steps_per_draw`` Langevin steps in one compiled call and records the
    last; the model's log density is compiled with PyTensor's Numba backend for this.

    Parameters
    ----------
    vars : list, optional
        Variables to sample (random or value variables, or names); default: all continuous
        free variables.
    center : dict or array_like, optional
        Center of the dilation path, where each chain's annealing starts. A dict names random
        variables with values in their own (constrained) space, as PyMC's ``initvals`` do
        (``{"sigma": 2.0}``), or value variables with values in unconstrained space
        (``{"sigma_log__": 0.69}``); a scalar is broadcast to the variable's shape and the
        variables not named keep their initial values. An array is the raveled unconstrained
        point. Default: the model's initial point. Unknown names, values outside a variable's
        support and a center where the log density is not finite raise ``ValueError``. Chains
        start their annealing at a center given here (``initvals`` then play no part in it);
        to let chains find several modes, put it between them.
    schedule : {"geometric", "power"} or array_like
        The ``lam`` levels of the annealing, one per tuning iteration; an explicit array must
        increase in ``(0, 1]`` and end at 1.
    n_levels : int
        Number of levels of a named schedule. If the tuning is known to be shorter than twice
        this, the schedule is thinned to half the tuning iterations.
    lambda_min : float
        First level of a named schedule, in ``(0, 1)``.
    steps_per_draw : int
        Langevin steps per iteration (gradient evaluations per draw).
    target_accept : float
        Target mean Metropolis acceptance probability, in ``(0, 1)``.
    anneal_metropolis : bool
        Accept/reject during the annealing (MALA) or not (unadjusted Langevin, as in the paper).
        Draws are always Metropolis-adjusted.
    initial_step : float
        Step size at the start of tuning, in the posterior's scale.
    tune : int, optional
        Number of tuning iterations. PyMC 6 tells the step method itself; on PyMC 5 give it to
        place the end of the adaptation windows (otherwise windows simply keep doubling until
        tuning stops).
    backend : {"numba", "c"}
        How to compile the log density (the C backend is a slower fallback).
    model : pymc.Model, optional
    rng : int, sequence of int or numpy.random.Generator, optional
        Seed or generator; ``pm.sample`` replaces it per chain from ``random_seed``.
    blocked : bool
        As for PyMC's step methods: ``False`` makes one step method per variable.

    Notes
    -----
    Sample stats, named as PyMC's NUTS names them: ``dilation`` (``lam`` of the iteration),
    ``step_size``, ``step_size_bar``, ``acceptance_rate``, ``diverging``, ``divergences``,
    ``lp`` (log density of the path at the recorded point; the model's log density once
    ``lam = 1``), ``n_steps`` (gradient evaluations; ``tree_size`` in the raw trace, renamed by
    PyMC's ArviZ conversion as for NUTS) and ``perf_counter_diff``.

    A proposal with a non-finite log density or gradient is rejected and marked as divergent;
    the chain goes on.

    Every option is checked when the step method is built, before the model is compiled: an
    invalid one raises ``ValueError`` naming it and what is allowed.

    Step-size restarts. The preconditioner windows follow Stan's: after the annealing, a first
    window of 25 iterations, then windows doubling in length, the last one stretched to end
    50 iterations before tuning does (with ``tune=1000`` and 200 levels, windows end near
    iterations 225, 275, 425 and 950; PyMC 5 does not tell a step method its ``tune``, so
    there, unless ``tune=`` is given, they keep doubling: 875). At each window's end the dual
    averaging restarts, at the averaged step size reached, shrinking towards that step.
    Before, it shrank towards ten times the step (Hoffman & Gelman's choice for a fresh start,
    which Stan also makes after it re-estimates the step): the next iteration then ran with a
    step 10-20 times too large, all its ``steps_per_draw`` proposals were rejected
    (acceptance 0), and on a two-mode posterior those oversized proposals were what threw
    chains from one mode to the other during tuning. For NUTS a large step is cheap (shorter
    trajectories); for a fixed number of Langevin steps per iteration it only wastes them.
    Measured on eight schools (non-centered, 4 chains, 1000 + 1000 iterations, seeds 1-3):
    iterations with acceptance < 0.05 after the annealing, 24-26 before, 2-6 now; the largest
    step-size ratio between two iterations, 12-15 before, about 3 now; min bulk ESS about the
    same (3063-3516 before, 3050-3342 now). On a two-mode posterior (modes -2 and 10, 16
    chains), 5-8 chains per run changed mode during tuning before, none now.

    Examples
    --------
    >>> import pymc as pm
    >>> from pymc_dilation import DilationLangevin
    >>> with pm.Model():
    ...     x = pm.Normal("x", 0, 1)
    ...     idata = pm.sample(step=DilationLangevin(), progressbar=False)  # doctest: +SKIP
    """

    name = "dilation_langevin"
    default_blocked = True
    default_tune_steps = 1000
    stats_dtypes_shapes = {
        "tune": (bool, []),
        "dilation": (np.float64, []),
        "step_size": (np.float64, []),
        "step_size_bar": (np.float64, []),
        "mean_tree_accept": (np.float64, []),
        "diverging": (bool, []),
        "divergences": (int, []),
        "model_logp": (np.float64, []),
        "tree_size": (np.float64, []),
        "perf_counter_diff": (np.float64, []),
    }

    def __new__(cls, *args, **kwargs):
        # PyMC's BlockedStep.__new__ reads model, vars, blocked and rng before __init__ runs:
        # check them here, so that its own errors (no model, an AttributeError) cannot come first.
        kwargs["model"] = check_model(kwargs.get("model"), "DilationLangevin")
        _check_vars(kwargs["model"], args[0] if args else kwargs.get("vars"))
        if kwargs.get("blocked") is not None:
            check_bool("blocked", kwargs["blocked"])
        check_random_seed("rng", kwargs.get("rng"), legacy=False)
        return super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        vars=None,
        *,
        center: dict | Sequence[float] | np.ndarray | None = None,
        schedule: str | Sequence[float] | np.ndarray = "geometric",
        n_levels: int = 200,
        lambda_min: float = 1e-3,
        steps_per_draw: int = 16,
        target_accept: float = 0.6,
        anneal_metropolis: bool = True,
        initial_step: float = 0.1,
        tune: int | None = None,
        backend: str = "numba",
        model=None,
        rng=None,
        blocked: bool = True,
    ):
        # Every option is checked before the (slow) compilation.
        model = check_model(model, "DilationLangevin")
        _check_vars(model, vars)
        n_levels = check_positive_int("n_levels", n_levels)
        lambda_min = check_probability("lambda_min", lambda_min)
        self.levels = make_schedule(_check_schedule(schedule), n_levels, lambda_min)
        self.steps_per_draw = check_positive_int("steps_per_draw", steps_per_draw)
        self.target_accept = check_probability("target_accept", target_accept)
        self.initial_step = check_positive_float("initial_step", initial_step)
        self.anneal_metropolis = check_bool("anneal_metropolis", anneal_metropolis)
        self.tune_iterations = None if tune is None else check_positive_int("tune", tune, zero=True)
        check_choice("backend", backend, ("numba", "c"))
        self.blocked = check_bool("blocked", blocked)
        self.rng = get_random_generator(check_random_seed("rng", rng, legacy=False))
        initial_point = model.initial_point()
        center_vec = resolve_center(
            model,
            center,
            continuous_value_vars(model, vars),
            base_point=initial_point,
            owner="DilationLangevin",
        )

        self._logp = compile_model_logp(model, vars, backend=backend)
        value_vars = {v.name: v for v in model.value_vars}
        self.vars = [value_vars[info.name] for info in self._logp.var_infos]
        self.var_names = tuple(info.name for info in self._logp.var_infos)
        self.center = check_center(
            center_vec,
            self._logp.logp_grad,
            self._logp.ravel_extra(initial_point),
            self.var_names,
            self._logp.dim,
        )
        self._start_at_center = center is not None
        self.tune = True
        self._start_chain(self.rng, self.tune_iterations, None)

    # ------------------------------------------------------------------ chain set-up
    def _start_chain(self, rng, tune: int | None, draws: int | None) -> None:
        self.rng = get_random_generator(rng, copy=False)
        if tune is None:
            tune = self.tune_iterations
        n_anneal = len(self.levels)
        if tune is not None and tune < 2 * n_anneal:
            n_anneal = max(1, tune // 2)
        pick = np.unique(np.round(np.linspace(0, len(self.levels) - 1, n_anneal)).astype(int))
        self._chain_levels = self.levels[pick]
        self._tune_total = tune
        self._iteration = 0
        self._step_adapt = DualAveraging(self.initial_step, self.target_accept)
        self._inv_mass = np.ones(self._logp.dim)
        self._variance = DiagonalVariance(self._logp.dim)
        self._window_end = len(self._chain_levels) + FIRST_WINDOW
        self._step_size = self.initial_step
        self._lam_recorded = None
        self._cache = None
        self._divergences = 0

    def stop_tuning(self) -> None:
        """End tuning: freeze the averaged step size and the preconditioner."""
        if self.tune:
            self._step_size = self._step_adapt.step_size_bar
        self.tune = False

    def reset_tuning(self) -> None:
        """Start tuning (and the annealing) anew on the current chain."""
        self._start_chain(self.rng, self._tune_total, None)
        self.tune = True

    # ------------------------------------------------------------------ sampling
    def step(self, point):
        extra = self._logp.ravel_extra(point)
        q = DictToArrayBijection.map({name: point[name] for name in self.var_names})
        new_data, stats = self._astep(q.data, extra)
        new = DictToArrayBijection.rmap(RaveledVars(new_data, q.point_map_info), start_point=point)
        return new, [stats]

    def _current_level(self) -> float:
        if self.tune and self._iteration < len(self._chain_levels):
            return float(self._chain_levels[self._iteration])
        return 1.0

    def _astep(self, x: np.ndarray, extra: np.ndarray):
        start = time.perf_counter()
        lam = self._current_level()
        x = x.astype(np.float64)
        y, lp, grad, n_fresh = self._state_at(x, extra, lam)
        eps = self._step_adapt.step_size if self.tune else self._step_size
        metropolis = self.anneal_metropolis or lam == 1.0
        ys, lps, grads = y[None, :].copy(), np.array([lp]), grad[None, :].copy()
        if self._logp.point_fn is not None:
            info = langevin_steps_compiled(
                self._logp.point_fn, extra, ys, lps, grads, eps, self._inv_mass,
                self.steps_per_draw, self.rng, metropolis,
            )  # fmt: skip
        else:
            info = langevin_steps_vectorized(
                self._logp.batch_callable(extra), ys, lps, grads, eps, self._inv_mass,
                self.steps_per_draw, self.rng, metropolis,
            )  # fmt: skip
        accept = float(info.acceptance_rate[0])
        n_div = int(info.divergences[0])
        if self.tune:
            self._adapt(ys[0], accept, lam)
        else:
            self._divergences += n_div
        self._iteration += 1

        x_new = ys[0] if lam == 1.0 else dilate(ys[0], self.center, lam)
        self._lam_recorded = lam
        self._cache = (x_new.copy(), extra.copy(), (ys[0], float(lps[0]), grads[0]))
        stats = {
            "tune": self.tune,
            "dilation": lam,
            "step_size": eps,
            "step_size_bar": self._step_adapt.step_size_bar,
            "mean_tree_accept": accept,
            "diverging": n_div > 0,
            "divergences": self._divergences,
            "model_logp": float(dilated_logp(float(lps[0]), lam, self._logp.dim)),
            "tree_size": float(self.steps_per_draw + n_fresh),
            "perf_counter_diff": time.perf_counter() - start,
        }
        return x_new, stats

    def _state_at(self, x: np.ndarray, extra: np.ndarray, lam: float):
        """Target coordinates, log density and gradient of the incoming point at level ``lam``.

        With a ``center`` given, an annealing chain starts at the Dirac end of the path, the
        center itself (the point ``pm.sample`` starts it from is not used then); otherwise, and
        without annealing, the start point is taken as a posterior-space point. Afterwards the
        incoming point is the path point recorded last; holding it fixed while ``lam`` rises is
        what contracts the target coordinates towards the center. The last evaluation is reused
        when neither the point, the other variables, nor the level changed.
        """
        if self._cache is not None and self._lam_recorded == lam:
            x_prev, extra_prev, (y, lp, grad) = self._cache
            if np.array_equal(x_prev, x) and np.array_equal(extra_prev, extra):
                return y, lp, grad, 0
        if self._lam_recorded is None and lam < 1.0 and self._start_at_center:
            y = self.center.copy()
        elif self._lam_recorded is None or lam == 1.0:
            y = x
        else:
            y = undilate(x, self.center, lam)
        lp, grad = self._logp.logp_grad(y, extra)
        return y, lp, grad, 1

    def _adapt(self, y: np.ndarray, accept: float, lam: float) -> None:
        self._step_adapt.update(accept)
        if lam < 1.0:
            return
        self._variance.add(y)
        if self._iteration + 1 < self._window_end:
            return
        # End of a preconditioner window: adopt the variances, restart the step-size averaging.
        self._inv_mass = self._variance.variance()
        self._variance.reset()
        self._restart_step_size()
        window = 2 * (self._window_end - len(self._chain_levels))
        self._window_end = self._iteration + 1 + window
        if self._tune_total is not None:
            last_useful = self._tune_total - FINAL_STEP_WINDOW
            if self._window_end + window > last_useful:
                self._window_end = max(self._window_end, last_useful)

    def _restart_step_size(self) -> None:
        """Restart the dual averaging after the preconditioner changed (see the class notes).

        It restarts at the averaged step size reached, shrinking towards that same step
        (``bias=1``), not towards ten times it.
        """
        self._step_adapt.restart(self._step_adapt.step_size_bar, bias=1.0)

    # ------------------------------------------------------------------ PyMC hooks
    @staticmethod
    def competence(var, has_grad):
        """Preferred for continuous variables with gradients, incompatible otherwise."""
        if var.dtype in continuous_types and has_grad:
            return Competence.PREFERRED
        return Competence.INCOMPATIBLE

    @staticmethod
    def _progressbar_config(n_chains=1):
        from rich.progress import TextColumn
        from rich.table import Column

        columns = [
            TextColumn("{task.fields[divergences]}", table_column=Column("Divergences", ratio=1)),
            TextColumn("{task.fields[step_size]:0.3f}", table_column=Column("Step size", ratio=1)),
            TextColumn("{task.fields[dilation]:0.3g}", table_column=Column("Dilation", ratio=1)),
        ]
        stats = {
            "divergences": [0] * n_chains,
            "step_size": [0] * n_chains,
            "dilation": [0] * n_chains,
        }
        return columns, stats

    @staticmethod
    def _make_progressbar_update_functions():
        def update_stats(stats):
            return {key: stats[key] for key in ("divergences", "step_size", "dilation")} | {
                "failing": stats["divergences"] > 0,
            }

        return (update_stats,)
