"""``DilationLangevin``: a PyMC step method that tunes by annealing along the dilation path."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from pymc.blocking import DictToArrayBijection, RaveledVars
from pymc.step_methods.compound import BlockedStep, Competence
from pymc.util import get_random_generator
from pymc.vartypes import continuous_types

from pymc_dilation._compat import ChainSetupMixin, modelcontext
from pymc_dilation.engine.adaptation import DiagonalVariance, DualAveraging
from pymc_dilation.engine.kernels import langevin_steps_compiled, langevin_steps_vectorized
from pymc_dilation.engine.path import dilate, dilated_logp, undilate
from pymc_dilation.engine.schedules import make_schedule
from pymc_dilation.model import compile_model_logp
from pymc_dilation.validation import check_center, check_positive_int, check_probability

__all__ = ["DilationLangevin"]

FIRST_WINDOW = 25
FINAL_STEP_WINDOW = 50


class DilationLangevin(ChainSetupMixin, BlockedStep):
    r"""Metropolis-adjusted Langevin sampling, tuned by annealing along the dilation path.

    Tuning walks the dilation path from a Dirac at ``center`` to the posterior: during the first
    tuning iterations the chain follows ``p_lam``, the posterior shrunk towards the center by
    ``sqrt(lam)``, with ``lam`` rising along ``schedule`` from ``lambda_min`` to 1. The remaining
    tuning iterations adapt the step size (dual averaging towards ``target_accept``) and a
    diagonal preconditioner (the posterior variances, in doubling windows) at ``lam = 1``. Draws
    are Metropolis-adjusted Langevin (MALA) steps on the posterior itself, so the chain is exact.

    Each iteration runs ``steps_per_draw`` Langevin steps in one compiled call and records the
    last; the model's log density is compiled with PyTensor's Numba backend for this.

    Parameters
    ----------
    vars : list, optional
        Variables to sample (random or value variables, or names); default: all continuous
        free variables.
    center : dict or array_like, optional
        Center of the dilation path, as a point ``{name: value}`` in unconstrained (value
        variable) space or a raveled array; default: the model's initial point.
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
    rng : RandomGenerator, optional
        Seed or generator; ``pm.sample`` replaces it per chain from ``random_seed``.

    Notes
    -----
    Sample stats, named as PyMC's NUTS names them: ``dilation`` (``lam`` of the iteration),
    ``step_size``, ``step_size_bar``, ``acceptance_rate``, ``diverging``, ``divergences``,
    ``lp`` (log density of the path at the recorded point; the model's log density once
    ``lam = 1``), ``n_steps`` (gradient evaluations; ``tree_size`` in the raw trace, renamed by
    PyMC's ArviZ conversion as for NUTS) and ``perf_counter_diff``.

    A proposal with a non-finite log density or gradient is rejected and marked as divergent;
    the chain goes on.

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
        model = modelcontext(model)
        self._logp = compile_model_logp(model, vars, backend=backend)
        value_vars = {v.name: v for v in model.value_vars}
        self.vars = [value_vars[info.name] for info in self._logp.var_infos]
        self.var_names = tuple(info.name for info in self._logp.var_infos)
        self.blocked = blocked
        self.rng = get_random_generator(rng)

        self.levels = make_schedule(schedule, check_positive_int("n_levels", n_levels), lambda_min)
        self.steps_per_draw = check_positive_int("steps_per_draw", steps_per_draw)
        self.target_accept = check_probability("target_accept", target_accept)
        if not (np.isfinite(initial_step) and initial_step > 0):
            raise ValueError(f"initial_step must be a positive number, got {initial_step!r}.")
        self.initial_step = float(initial_step)
        self.anneal_metropolis = bool(anneal_metropolis)
        self.tune_iterations = None if tune is None else check_positive_int("tune", tune, zero=True)

        initial_point = model.initial_point()
        if center is None:
            center_vec = self._logp.ravel(initial_point)
        elif isinstance(center, dict):
            center_vec = self._logp.ravel({**initial_point, **center})
        else:
            center_vec = np.asarray(center, dtype=float).ravel()
        self.center = check_center(
            center_vec,
            self._logp.logp_grad,
            self._logp.ravel_extra(initial_point),
            self.var_names,
            self._logp.dim,
        )
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

        The chain's start point is taken as a posterior-space point. Afterwards the incoming
        point is the path point recorded last; holding it fixed while ``lam`` rises is what
        contracts the target coordinates towards the center. The last evaluation is reused when
        neither the point, the other variables, nor the level changed.
        """
        if self._cache is not None and self._lam_recorded == lam:
            x_prev, extra_prev, (y, lp, grad) = self._cache
            if np.array_equal(x_prev, x) and np.array_equal(extra_prev, extra):
                return y, lp, grad, 0
        if self._lam_recorded is None or lam == 1.0:
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
        self._step_adapt.restart(self._step_adapt.step_size)
        window = 2 * (self._window_end - len(self._chain_levels))
        self._window_end = self._iteration + 1 + window
        if self._tune_total is not None:
            last_useful = self._tune_total - FINAL_STEP_WINDOW
            if self._window_end + window > last_useful:
                self._window_end = max(self._window_end, last_useful)

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
