"""``compare_with_nuts``: sample a model with ``DilationLangevin`` and with NUTS, side by side."""

from __future__ import annotations

import html
import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm

from pymc_dilation._compat import SUMMARY_COLUMNS, overlay_posteriors, summary_table
from pymc_dilation.occupancy import check_mode_maps
from pymc_dilation.step import DilationLangevin
from pymc_dilation.validation import (
    check_bool,
    check_continuous_free_vars,
    check_model,
    check_names,
    check_positive_int,
    check_probability,
    check_random_seed,
)

__all__ = ["ComparisonResult", "compare_with_nuts"]

NUTS_SAMPLERS = ("auto", "pymc", "nutpie")
SAMPLERS = ("dilation", "nuts")
LABELS = {"dilation": "DilationLangevin", "nuts": "NUTS"}
# Set by compare_with_nuts itself, so not accepted in sample_kwargs / nuts_kwargs.
RESERVED_SAMPLE_KWARGS = frozenset(
    {"draws", "tune", "chains", "random_seed", "model", "step", "nuts_sampler"}
)
# Set by compare_with_nuts (model) or by pm.sample per chain (rng), so not in dilation_kwargs.
RESERVED_DILATION_KWARGS = frozenset({"model", "rng"})


def _parameters(fn) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]


def _sample_keywords() -> list[str]:
    """``pm.sample``'s own keywords that ``compare_with_nuts`` passes to both runs."""
    from pymc.sampling.mcmc import sample

    return [k for k in _parameters(sample) if k not in RESERVED_SAMPLE_KWARGS]


def _nuts_keywords() -> list[str]:
    """Step-method keywords ``pm.sample`` hands to NUTS (``target_accept``, ``nuts={...}``)."""
    from pymc.step_methods.hmc.base_hmc import BaseHMC
    from pymc.step_methods.hmc.nuts import NUTS

    internal = {"self", "vars", "model", "rng", "initial_point", "blocked", "dtype"}
    options = [k for k in _parameters(NUTS.__init__) + _parameters(BaseHMC.__init__)]
    options = [k for k in dict.fromkeys(options) if k not in internal]
    return options + [step.name for step in pm.STEP_METHODS]


def _dilation_keywords() -> list[str]:
    return [k for k in _parameters(DilationLangevin.__init__) if k != "self"]


@dataclass(repr=False, eq=False)
class ComparisonResult:
    """Draws of ``DilationLangevin`` and of NUTS on one model, and their summaries side by side.

    Attributes
    ----------
    dilation : arviz.InferenceData or xarray.DataTree
        What ``pm.sample(step=DilationLangevin(...))`` returned.
    nuts : arviz.InferenceData or xarray.DataTree
        What ``pm.sample`` with NUTS returned.
    table : pandas.DataFrame
        One row per scalar parameter element, labelled as ``az.summary`` labels them
        (``"mu[0]"``). Columns are a two-level index ``(statistic, sampler)`` with samplers
        ``"dilation"`` and ``"nuts"`` side by side: ``mean``, ``sd``, ``ess_bulk``, ``ess_tail``,
        ``r_hat`` per parameter, then ``wall_time_s`` and ``ess_per_s`` (minimum bulk ESS over
        the table's parameters per second of wall time), which are per sampler and so repeated
        on every row. ``result.table["mean"]`` gives the two means side by side.
    wall_time : dict of {str : float}
        Seconds per sampler (``"dilation"``, ``"nuts"``), compilation included.
    nuts_sampler : {"pymc", "nutpie"}
        The NUTS implementation that ran.
    var_names : list of str
        The variables the table and ``plot`` cover.
    """

    dilation: Any
    nuts: Any
    table: pd.DataFrame
    wall_time: dict[str, float]
    nuts_sampler: str
    var_names: list[str] = field(default_factory=list)

    @property
    def ess_per_second(self) -> dict[str, float]:
        """Minimum bulk ESS over the table's parameters per second of wall time, per sampler."""
        return {s: float(self.table["ess_bulk"][s].min()) / self.wall_time[s] for s in SAMPLERS}

    @property
    def timing(self) -> pd.DataFrame:
        """One row per sampler: ``wall_time_s``, ``min_ess_bulk`` and ``ess_per_s``."""
        rows = {
            s: {
                "wall_time_s": self.wall_time[s],
                "min_ess_bulk": float(self.table["ess_bulk"][s].min()),
                "ess_per_s": self.ess_per_second[s],
            }
            for s in SAMPLERS
        }
        return pd.DataFrame.from_dict(rows, orient="index")

    def _title(self) -> str:
        return f"ComparisonResult: DilationLangevin vs NUTS ({self.nuts_sampler})"

    def __repr__(self) -> str:
        stats = self.table.drop(columns=["wall_time_s", "ess_per_s"], level=0)
        fmt = "{:.4g}".format
        return "\n\n".join(
            [
                self._title(),
                self.timing.to_string(float_format=fmt),
                stats.to_string(float_format=fmt),
            ]
        )

    def _repr_html_(self) -> str:
        stats = self.table.drop(columns=["wall_time_s", "ess_per_s"], level=0)
        fmt = "{:.4g}".format
        return (
            f"<p><b>{html.escape(self._title())}</b></p>"
            f"{self.timing.to_html(float_format=fmt)}<br>{stats.to_html(float_format=fmt)}"
        )

    def plot(self, var_names: str | Sequence[str] | None = None, **kwargs):
        """Overlay the marginal posteriors of the two samplers, one panel per scalar element.

        Uses ``az.plot_density`` on ArviZ 0.x and ``az.plot_dist`` (matplotlib backend) on
        ArviZ 1.x.

        Parameters
        ----------
        var_names : str or sequence of str, optional
            Variables to plot; default: those of the comparison (``self.var_names``).
        **kwargs
            Passed to the ArviZ plotting function (whose options differ between ArviZ 0.x and
            1.x).

        Returns
        -------
        matplotlib.figure.Figure
        """
        var_names = self.var_names if var_names is None else _as_list(var_names)
        data = {
            LABELS["dilation"]: self.dilation,
            f"{LABELS['nuts']} ({self.nuts_sampler})": self.nuts,
        }
        return overlay_posteriors(data, var_names=var_names, **kwargs)


def _as_list(var_names: str | Sequence[str]) -> list[str]:
    return [var_names] if isinstance(var_names, str) else list(var_names)


def _shared_variables(dilation, nuts) -> list[str]:
    """Posterior variables of both runs, in the order of the first.

    Needed because PyMC 5 with nutpie also stores the transformed values (``sigma_log__``).
    """
    in_nuts = set(nuts.posterior.data_vars)
    return [name for name in dilation.posterior.data_vars if name in in_nuts]


def _nutpie_available() -> bool:
    try:
        import nutpie  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_nuts_sampler(nuts_sampler: str) -> str:
    if not isinstance(nuts_sampler, str) or nuts_sampler not in NUTS_SAMPLERS:
        allowed = ", ".join(repr(s) for s in NUTS_SAMPLERS)
        raise ValueError(f"nuts_sampler must be one of {allowed}; got {nuts_sampler!r}.")
    if nuts_sampler == "auto":
        return "nutpie" if _nutpie_available() else "pymc"
    if nuts_sampler == "nutpie" and not _nutpie_available():
        raise ImportError(
            "nuts_sampler='nutpie' needs the nutpie package (pip install nutpie); "
            "use nuts_sampler='pymc' or 'auto' for PyMC's NUTS."
        )
    return nuts_sampler


def _check_kwargs(
    name: str, value: Mapping[str, Any] | None, reserved, allowed: Sequence[str]
) -> dict[str, Any]:
    """A keyword dict option as a dict, its keys among ``allowed``, none of them ``reserved``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a dict or None, got {type(value).__name__}.")
    clash = sorted(set(value) & set(reserved))
    if clash:
        raise ValueError(
            f"{name} may not set {', '.join(clash)}: compare_with_nuts sets "
            f"{'it' if len(clash) == 1 else 'them'} itself."
        )
    unknown = sorted(map(str, set(value) - set(allowed)))
    if unknown:
        raise ValueError(
            f"{name} has unknown keys {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(allowed)}."
        )
    if name != "dilation_kwargs":
        _check_sample_values(name, value)
    return dict(value)


def _check_sample_values(name: str, options: Mapping[str, Any]) -> None:
    """Check the ``pm.sample`` values that PyMC itself would check only later, or never."""
    where = "" if name == "" else f" (in {name})"
    if options.get("return_inferencedata", True) is not True:
        raise ValueError(
            f"return_inferencedata{where} must be True: compare_with_nuts summarises "
            f"what pm.sample returns; got {options['return_inferencedata']!r}."
        )
    if options.get("cores") is not None:
        check_positive_int(f"cores{where}", options["cores"])
    for key in ("discard_tuned_samples", "compute_convergence_checks", "quiet"):
        if key in options:
            check_bool(f"{key}{where}", options[key])
    if "progressbar" in options and not isinstance(options["progressbar"], bool | str):
        raise ValueError(
            f"progressbar{where} must be True, False or one of pm.sample's layouts "
            f"('combined', 'split', ...); got {options['progressbar']!r}."
        )
    if "target_accept" in options:
        check_probability(f"target_accept{where}", options["target_accept"])


def _check_direct_keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check the ``pm.sample`` keywords typed into ``compare_with_nuts`` itself."""
    sample_keys, nuts_keys = _sample_keywords(), _nuts_keywords()
    for key in kwargs:
        if key in RESERVED_SAMPLE_KWARGS:  # only "step" can get here
            raise ValueError(f"{key} may not be given: compare_with_nuts sets it itself.")
        if key in sample_keys or key in nuts_keys:
            continue
        hint = ""
        if key in _dilation_keywords():
            hint = (
                f" {key} is an option of DilationLangevin: pass dilation_kwargs={{{key!r}: ...}}."
            )
        raise TypeError(
            f"compare_with_nuts() got an unexpected keyword argument {key!r}.{hint} It takes "
            f"pm.sample's keywords ({', '.join(sample_keys)}) and NUTS options "
            f"({', '.join(nuts_keys)})."
        )
    _check_sample_values("", kwargs)
    return kwargs


def _route(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(both, nuts_only)``: ``pm.sample``'s own keywords go to both runs, NUTS options to NUTS.

    ``pm.sample(step=DilationLangevin(...), target_accept=...)`` would refuse a NUTS option, so
    ``target_accept`` and the other step-method keywords reach only the NUTS run.
    """
    sample_keys = set(_sample_keywords())
    both = {k: v for k, v in options.items() if k in sample_keys}
    return both, {k: v for k, v in options.items() if k not in sample_keys}


def _side_by_side(frames: dict[str, pd.DataFrame], wall_time: dict[str, float]) -> pd.DataFrame:
    index = frames["dilation"].index
    columns = {}
    for stat in SUMMARY_COLUMNS:
        for sampler in SAMPLERS:
            columns[(stat, sampler)] = frames[sampler][stat].reindex(index)
    for sampler in SAMPLERS:
        columns[("wall_time_s", sampler)] = pd.Series(wall_time[sampler], index=index)
    for sampler in SAMPLERS:
        min_ess = float(frames[sampler]["ess_bulk"].min())
        columns[("ess_per_s", sampler)] = pd.Series(min_ess / wall_time[sampler], index=index)
    table = pd.DataFrame(columns, index=index)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["statistic", "sampler"])
    return table


def compare_with_nuts(
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    random_seed=None,
    model: pm.Model | None = None,
    *,
    nuts_sampler: str = "auto",
    var_names: str | Sequence[str] | None = None,
    dilation_kwargs: Mapping[str, Any] | None = None,
    sample_kwargs: Mapping[str, Any] | None = None,
    nuts_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ComparisonResult:
    """Sample a model with ``DilationLangevin`` and with NUTS and compare the two runs.

    Runs ``pm.sample(step=DilationLangevin(**dilation_kwargs))``, then ``pm.sample`` with NUTS,
    with the same ``draws``, ``tune``, ``chains`` and ``random_seed``, timing each call with
    ``time.perf_counter`` (compilation included: the ``DilationLangevin`` step is built inside
    the timed call, as ``pm.sample`` builds NUTS there). Means, standard deviations, bulk and
    tail ESS and R-hat come from ``az.summary``.

    Parameters
    ----------
    draws : int
        Draws per chain, after tuning (at least 1).
    tune : int
        Tuning iterations per chain (at least 0).
    chains : int
        Number of chains (at least 1).
    random_seed : int, optional
        Seed for both runs.
    model : pymc.Model, optional
        Defaults to the model in context.
    nuts_sampler : {"auto", "pymc", "nutpie"}
        NUTS implementation: ``"auto"`` uses nutpie when it can be imported and PyMC's NUTS
        otherwise. Either runs through ``pm.sample(nuts_sampler=...)``.
    var_names : str or sequence of str, optional
        Variables for the table and the plot; default: all posterior variables of both runs
        (deterministics included).
    dilation_kwargs : dict, optional
        Options of :class:`~pymc_dilation.DilationLangevin` (``n_levels``, ``steps_per_draw``,
        ``target_accept``, ...). ``tune`` defaults to ``tune`` (it places the adaptation windows
        on PyMC 5).
    sample_kwargs : dict, optional
        The same keywords as ``**kwargs``, as a dict (kept for backward compatibility).
    nuts_kwargs : dict, optional
        Further arguments of the NUTS ``pm.sample`` call only (e.g. ``target_accept``,
        ``init``); they override ``**kwargs`` and ``sample_kwargs``.
    **kwargs
        Keywords of ``pm.sample``, typed as for ``pm.sample`` itself: its own keywords
        (``cores``, ``progressbar``, ``compute_convergence_checks``, ``initvals``,
        ``idata_kwargs``, ...) go to both runs; the step-method options that ``pm.sample``
        hands to NUTS (``target_accept``, ``max_treedepth``, ``nuts={...}``, ...) go to the
        NUTS run only, as ``pm.sample`` would refuse them next to ``step=``.
        ``DilationLangevin``'s own ``target_accept`` and other options go in
        ``dilation_kwargs``.

    Returns
    -------
    ComparisonResult
        With ``.dilation`` and ``.nuts`` (each what ``pm.sample`` returns in the installed
        PyMC: ``arviz.InferenceData`` on PyMC 5, ``xarray.DataTree`` on PyMC 6), ``.table``,
        ``.wall_time``, ``.ess_per_second``, ``.timing`` and ``.plot()``.

    Warns
    -----
    UnreliableResultWarning
        When the ``DilationLangevin`` chains found different modes or visited them in
        different shares (see :func:`~pymc_dilation.check_mode_maps`).

    Raises
    ------
    ValueError
        Before anything is compiled or sampled, for an invalid option: an unknown
        ``nuts_sampler``, ``draws`` or ``chains`` below 1, negative ``tune``, a
        ``random_seed`` NumPy cannot use (or a list of seeds not one per chain), no model or
        a model without continuous free variables, ``var_names`` that are not posterior
        variables of the model, keyword dicts that are not dicts, have unknown keys or set
        what ``compare_with_nuts`` sets itself, the same keyword given twice, and invalid
        ``DilationLangevin`` options.
    TypeError
        For a keyword that is neither ``pm.sample``'s nor a NUTS option, as Python raises for
        an unexpected keyword argument.
    ImportError
        For ``nuts_sampler="nutpie"`` without nutpie installed.

    Examples
    --------
    >>> import pymc as pm
    >>> from pymc_dilation import compare_with_nuts
    >>> with pm.Model():
    ...     mu = pm.Normal("mu", 0, 1, shape=2)
    ...     result = compare_with_nuts(draws=500, chains=2, progressbar=False)  # doctest: +SKIP
    >>> result.table["mean"]  # doctest: +SKIP
    >>> result.plot()  # doctest: +SKIP
    """
    draws = check_positive_int("draws", draws)
    tune = check_positive_int("tune", tune, zero=True)
    chains = check_positive_int("chains", chains)
    random_seed = check_random_seed("random_seed", random_seed, chains=chains)
    sampler = _resolve_nuts_sampler(nuts_sampler)
    if sampler == "nutpie" and isinstance(random_seed, list | tuple | np.ndarray):
        raise ValueError(
            "random_seed must be None, one non-negative integer or a numpy Generator when NUTS "
            "is nutpie (pm.sample gives nutpie a single seed); got a sequence of seeds. Pass "
            "one integer, or nuts_sampler='pymc'."
        )
    model = check_model(model, "compare_with_nuts")
    check_continuous_free_vars(model, "compare_with_nuts")
    allowed_sample = _sample_keywords() + _nuts_keywords()
    dilation_options = _check_kwargs(
        "dilation_kwargs", dilation_kwargs, RESERVED_DILATION_KWARGS, _dilation_keywords()
    )
    given = _check_kwargs("sample_kwargs", sample_kwargs, RESERVED_SAMPLE_KWARGS, allowed_sample)
    direct = _check_direct_keywords(kwargs)
    twice = sorted(set(given) & set(direct))
    if twice:
        raise ValueError(
            f"{', '.join(twice)} given both as a keyword and in sample_kwargs; give "
            f"{'it' if len(twice) == 1 else 'them'} once."
        )
    common, nuts_only = _route({**given, **direct})
    nuts_options = {
        **nuts_only,
        **_check_kwargs("nuts_kwargs", nuts_kwargs, RESERVED_SAMPLE_KWARGS, allowed_sample),
    }
    if var_names is not None:
        posterior = [rv.name for rv in model.free_RVs] + [d.name for d in model.deterministics]
        var_names = check_names("var_names", var_names, posterior)
    dilation_options.setdefault("tune", tune)
    run = dict(draws=draws, tune=tune, chains=chains, random_seed=random_seed, model=model)

    wall_time = {}
    with model:
        start = time.perf_counter()
        dilation = pm.sample(
            step=DilationLangevin(model=model, **dilation_options),
            nuts_sampler="pymc",
            **run,
            **common,
        )
        wall_time["dilation"] = time.perf_counter() - start
        if chains > 1:
            check_mode_maps(dilation)

        start = time.perf_counter()
        nuts = pm.sample(nuts_sampler=sampler, **run, **{**common, **nuts_options})
        wall_time["nuts"] = time.perf_counter() - start

    if var_names is None:
        var_names = _shared_variables(dilation, nuts)
    frames = {
        name: summary_table(idata, var_names) for name, idata in zip(SAMPLERS, (dilation, nuts))
    }
    return ComparisonResult(
        dilation=dilation,
        nuts=nuts,
        table=_side_by_side(frames, wall_time),
        wall_time=wall_time,
        nuts_sampler=sampler,
        var_names=var_names,
    )
