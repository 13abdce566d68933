"""``compare_with_nuts``: sample a model with ``DilationLangevin`` and with NUTS, side by side."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pymc as pm

from pymc_dilation._compat import SUMMARY_COLUMNS, modelcontext, overlay_posteriors, summary_table
from pymc_dilation.step import DilationLangevin
from pymc_dilation.validation import check_positive_int

__all__ = ["ComparisonResult", "compare_with_nuts"]

NUTS_SAMPLERS = ("auto", "pymc", "nutpie")
SAMPLERS = ("dilation", "nuts")
LABELS = {"dilation": "DilationLangevin", "nuts": "NUTS"}
# Set by compare_with_nuts itself, so not accepted in sample_kwargs / nuts_kwargs.
RESERVED_SAMPLE_KWARGS = frozenset(
    {"draws", "tune", "chains", "random_seed", "model", "step", "nuts_sampler"}
)


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


def _check_kwargs(name: str, value: Mapping[str, Any] | None, reserved) -> dict[str, Any]:
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
    if name != "dilation_kwargs" and value.get("return_inferencedata", True) is False:
        raise ValueError(f"{name} may not set return_inferencedata=False.")
    return dict(value)


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
        Further arguments of both ``pm.sample`` calls (``cores``, ``progressbar``,
        ``compute_convergence_checks``, ...).
    nuts_kwargs : dict, optional
        Further arguments of the NUTS ``pm.sample`` call only (e.g. ``target_accept``); they
        override ``sample_kwargs``.

    Returns
    -------
    ComparisonResult
        With ``.dilation`` and ``.nuts`` (each what ``pm.sample`` returns in the installed
        PyMC: ``arviz.InferenceData`` on PyMC 5, ``xarray.DataTree`` on PyMC 6), ``.table``,
        ``.wall_time``, ``.ess_per_second``, ``.timing`` and ``.plot()``.

    Raises
    ------
    ValueError
        For an unknown ``nuts_sampler``, ``draws`` or ``chains`` below 1, negative ``tune``,
        or keyword dicts that are not dicts or set what ``compare_with_nuts`` sets itself.
    ImportError
        For ``nuts_sampler="nutpie"`` without nutpie installed.

    Examples
    --------
    >>> import pymc as pm
    >>> from pymc_dilation import compare_with_nuts
    >>> with pm.Model():
    ...     mu = pm.Normal("mu", 0, 1, shape=2)
    ...     result = compare_with_nuts(draws=500, chains=2)  # doctest: +SKIP
    >>> result.table["mean"]  # doctest: +SKIP
    >>> result.plot()  # doctest: +SKIP
    """
    draws = check_positive_int("draws", draws)
    tune = check_positive_int("tune", tune, zero=True)
    chains = check_positive_int("chains", chains)
    sampler = _resolve_nuts_sampler(nuts_sampler)
    dilation_options = _check_kwargs("dilation_kwargs", dilation_kwargs, {"model"})
    common = _check_kwargs("sample_kwargs", sample_kwargs, RESERVED_SAMPLE_KWARGS)
    nuts_options = _check_kwargs("nuts_kwargs", nuts_kwargs, RESERVED_SAMPLE_KWARGS)
    if var_names is not None:
        var_names = _as_list(var_names)
    model = modelcontext(model)
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
